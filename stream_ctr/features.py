"""Feature encoding shared by the streaming path and the offline evaluator.

Every event becomes a fixed row of *slots*: ``ids`` (int64 indexes into one hashed embedding space) and ``vals``
(float32 weights). A categorical field is one slot with weight 1; a numeric field is one slot whose id names the
field and whose weight is a signed ``log1p`` of the value; a multi-valued field (``"Action|Comedy"``) takes
``width`` slots with weight ``1/k`` each and id 0 (padding, weight 0) for the rest. Hashing needs no vocabulary,
so a stream can meet new users and items at any time; the hash is CRC32, stable across processes.

>>> spec = FeatureSpec(fields=(Field("gender"), Field("genres", "multi", 2)), buckets=1024)
>>> ids, vals = HashingEncoder(spec).encode([("u1", "i1", {"gender": "F", "genres": "A|B"})])
>>> ids.shape, vals[0].tolist()
((1, 5), [1.0, 1.0, 1.0, 0.5, 0.5])
"""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

__all__ = ["Field", "FeatureSpec", "HashingEncoder"]

KINDS = ("cat", "num", "multi")


@dataclass(frozen=True)
class Field:
    name: str
    kind: str = "cat"
    width: int = 1
    sep: str = "|"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"field {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind != "multi" and self.width != 1:
            raise ValueError(f"field {self.name!r}: only multi fields have width > 1")


@dataclass(frozen=True)
class FeatureSpec:
    """Which event features the models see: ``user_id`` (unless ``user_id=False``), ``item_id``, then ``fields``.

    Without the user id the global model cannot memorise each user's click rate, which is the setting of the
    label-correction paper: a shared cloud model, with each user's prior left to on-device fine-tuning.
    """

    fields: tuple[Field, ...] = ()
    buckets: int = 1 << 15
    user_id: bool = True

    @property
    def n_slots(self) -> int:
        return int(self.user_id) + 1 + sum(f.width for f in self.fields)

    @classmethod
    def parse(cls, text: str, buckets: int = 1 << 15, user_id: bool = True) -> "FeatureSpec":
        """``"age,gender,genres:multi:6,price:num"`` -> a spec (kind defaults to ``cat``)."""
        fields = []
        for item in filter(None, (t.strip() for t in text.split(","))):
            name, kind, width = (item.split(":") + ["cat", "1"])[:3] if ":" in item else (item, "cat", "1")
            fields.append(Field(name, kind, int(width) if kind == "multi" else 1))
        return cls(fields=tuple(fields), buckets=buckets, user_id=user_id)

    def to_dict(self) -> dict:
        return {"buckets": self.buckets, "user_id": self.user_id, "fields": [asdict(f) for f in self.fields]}

    @classmethod
    def from_dict(cls, d: Mapping) -> "FeatureSpec":
        return cls(fields=tuple(Field(**f) for f in d["fields"]), buckets=int(d["buckets"]),
                   user_id=bool(d.get("user_id", True)))


class HashingEncoder:
    """Encodes ``(user_id, item_id, features)`` rows into ``(ids, vals)`` arrays of shape ``[n, n_slots]``.

    It works a column (slot) at a time: one list comprehension of dictionary lookups per field, filled into the
    arrays with one numpy assignment, instead of per-event Python over every slot. Each field keeps its own cache
    of value -> slot id (for a multi field, value -> its ids and weights), bounded at ``max_cached`` entries.
    """

    def __init__(self, spec: FeatureSpec, max_cached: int = 1_000_000):
        self.spec = spec
        self.max_cached = max_cached
        self._caches: dict[str, dict] = {}

    def _hash(self, token: str) -> int:
        # 0 is the padding id; real tokens land in [1, buckets).
        return 1 + zlib.crc32(token.encode()) % (self.spec.buckets - 1)

    def _column(self, name: str, values: list, fn) -> list:
        """``fn(value)`` for each value, through the column's cache. Only strings are cached: ``1 == 1.0 == True``
        as keys, but they hash as different tokens, and an encoding must not depend on which came first."""
        cache = self._caches.setdefault(name, {})
        get = cache.get
        out = [get(v) for v in values]  # only str keys are stored, and no number equals a str
        if None not in out:
            return out
        for i, v in enumerate(values):
            if out[i] is None:
                cached = type(v) is str
                out[i] = (cached and cache.get(v)) or fn(v)  # a value seen earlier in this batch is cached now
                if cached and len(cache) < self.max_cached:
                    cache[v] = out[i]
        return out

    def encode(self, rows: Iterable[tuple[str, str, Mapping]]) -> tuple[np.ndarray, np.ndarray]:
        rows = list(rows)
        s = self.spec.n_slots
        ids = np.zeros((len(rows), s), dtype=np.int64)
        vals = np.zeros((len(rows), s), dtype=np.float32)
        if not rows:
            return ids, vals
        col = 0
        for name in ("user_id", "item_id")[0 if self.spec.user_id else 1:]:
            values = [r[0] for r in rows] if name == "user_id" else [r[1] for r in rows]
            ids[:, col] = self._column(name, values, lambda v, name=name: self._hash(f"{name}={v}"))
            vals[:, col] = 1.0
            col += 1
        for f in self.spec.fields:
            values = [r[2].get(f.name) for r in rows]
            if f.kind == "cat":
                token = lambda v, f=f: 0 if v is None else self._hash(f"{f.name}={v}")  # noqa: E731 (None: padding)
                ids[:, col] = self._column(f.name, values, token)
                vals[:, col] = ids[:, col] > 0
            elif f.kind == "num":
                x = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
                present = ~np.isnan(x)
                ids[present, col] = self._hash(f"{f.name}#")
                vals[present, col] = np.sign(x[present]) * np.log1p(np.abs(x[present]))
            else:
                cells = self._column(f.name, values, lambda v, f=f: self._multi(f, v))
                ids[:, col: col + f.width] = [c[0] for c in cells]
                vals[:, col: col + f.width] = [c[1] for c in cells]
            col += f.width
        return ids, vals

    def _multi(self, f: Field, value) -> tuple[list[int], list[float]]:
        """A multi field's ``width`` slots: its first ``width`` tokens at ``1/k`` each, then padding."""
        tokens = [t for t in str(value).split(f.sep) if t][: f.width] if value is not None else []
        pad = f.width - len(tokens)
        return ([self._hash(f"{f.name}={t}") for t in tokens] + [0] * pad,
                [1.0 / len(tokens)] * len(tokens) + [0.0] * pad)

    def encode_events(self, events: Sequence) -> tuple[np.ndarray, np.ndarray]:
        return self.encode((e.user_id, e.item_id, e.features) for e in events)
