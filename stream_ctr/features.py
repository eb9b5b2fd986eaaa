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

import math
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
    """Encodes ``(user_id, item_id, features)`` rows into ``(ids, vals)`` arrays of shape ``[n, n_slots]``."""

    def __init__(self, spec: FeatureSpec):
        self.spec = spec
        self._cache: dict[str, int] = {}

    def _hash(self, token: str) -> int:
        idx = self._cache.get(token)
        if idx is None:
            # 0 is the padding id; real tokens land in [1, buckets).
            idx = 1 + zlib.crc32(token.encode()) % (self.spec.buckets - 1)
            if len(self._cache) < 1_000_000:
                self._cache[token] = idx
        return idx

    def encode(self, rows: Iterable[tuple[str, str, Mapping]]) -> tuple[np.ndarray, np.ndarray]:
        rows = list(rows)
        s = self.spec.n_slots
        ids = np.zeros((len(rows), s), dtype=np.int64)
        vals = np.zeros((len(rows), s), dtype=np.float32)
        for r, (user_id, item_id, feats) in enumerate(rows):
            col = 0
            if self.spec.user_id:
                ids[r, 0], vals[r, 0] = self._hash(f"user_id={user_id}"), 1.0
                col = 1
            ids[r, col], vals[r, col] = self._hash(f"item_id={item_id}"), 1.0
            col += 1
            for f in self.spec.fields:
                value = feats.get(f.name)
                if f.kind == "cat":
                    if value is not None:
                        ids[r, col], vals[r, col] = self._hash(f"{f.name}={value}"), 1.0
                elif f.kind == "num":
                    if value is not None:
                        x = float(value)
                        ids[r, col] = self._hash(f"{f.name}#")
                        vals[r, col] = math.copysign(math.log1p(abs(x)), x)
                else:
                    tokens = [t for t in str(value).split(f.sep) if t][: f.width] if value is not None else []
                    for j, t in enumerate(tokens):
                        ids[r, col + j], vals[r, col + j] = self._hash(f"{f.name}={t}"), 1.0 / len(tokens)
                col += f.width
        return ids, vals

    def encode_events(self, events: Sequence) -> tuple[np.ndarray, np.ndarray]:
        return self.encode((e.user_id, e.item_id, e.features) for e in events)
