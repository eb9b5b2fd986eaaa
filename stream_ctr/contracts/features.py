"""Feature encoding shared by the streaming path and the offline evaluator.

Every event becomes a fixed row of *slots*: ``ids`` (int64 indexes into one hashed embedding space) and ``vals``
(float32 weights). A categorical field is one slot with weight 1; a numeric field is one slot whose id names the
field and whose weight is a signed ``log1p`` of the value; a multi-valued field (``"Action|Comedy"``) takes
``width`` slots with weight ``1/k`` each and id 0 (padding, weight 0) for the rest. Hashing needs no vocabulary,
so a stream can meet new users and items at any time; the hash is CRC32, stable across processes.

Every valid value encodes; nothing here raises for one (the event contract, :mod:`stream_ctr.contracts.events`, allows a
string or a finite number for any feature, and any feature may be absent):

- a missing value, an empty string, a multi value with no token (``""``, ``"|||"``) and a numeric value that is
  not a finite number (``"abc"``, ``"inf"``) all encode as padding (id 0, weight 0);
- a number where a string is usual is its decimal text (``3``, ``3.0`` and ``"3"`` are one category), and a
  numeric string where a number is usual is parsed (``"2.5"`` is 2.5);
- multi tokens are stripped of surrounding blanks, and only the first ``width`` count;
- a feature the spec does not name is ignored, and counted in :attr:`HashingEncoder.unknown_features`.

>>> spec = FeatureSpec(fields=(Field("gender"), Field("genres", "multi", 2)), buckets=1024)
>>> ids, vals = HashingEncoder(spec).encode([("u1", "i1", {"gender": "F", "genres": "A|B"})])
>>> ids.shape, vals[0].tolist()
((1, 5), [1.0, 1.0, 1.0, 0.5, 0.5])
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["Field", "FeatureSpec", "HashingEncoder"]

KINDS = ("cat", "num", "multi")
#: The two slots every row has; no field may take their names.
RESERVED = ("user_id", "item_id")
#: Most slots one multi field may take.
MAX_WIDTH = 64


@dataclass(frozen=True)
class Field:
    name: str
    kind: str = "cat"
    width: int = 1
    sep: str = "|"

    def __post_init__(self):
        if not self.name or self.name in RESERVED:
            raise ValueError(f"field {self.name!r}: a field needs a name other than {RESERVED}")
        if self.kind not in KINDS:
            raise ValueError(f"field {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind != "multi" and self.width != 1:
            raise ValueError(f"field {self.name!r}: only multi fields have width > 1")
        if not 1 <= self.width <= MAX_WIDTH:
            raise ValueError(f"field {self.name!r}: width must be 1 to {MAX_WIDTH}, got {self.width}")
        if not self.sep:
            raise ValueError(f"field {self.name!r}: a multi field needs a non-empty separator")


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
    def parse(cls, text: str, buckets: int = 1 << 15, user_id: bool = True) -> FeatureSpec:
        """``"age,gender,genres:multi:6,price:num"`` -> a spec (kind defaults to ``cat``, a multi field's width to
        1). Raises ``ValueError`` naming the item for anything else: an unknown kind, a width that is not a whole
        number from 1 to :data:`MAX_WIDTH` or on a field that is not multi, a name given twice."""
        fields: list[Field] = []
        for item in filter(None, (t.strip() for t in text.split(","))):
            parts = [p.strip() for p in item.split(":")]
            if len(parts) > 3 or (len(parts) == 3 and parts[1] != "multi"):
                raise ValueError(f"{item!r}: expected name[:cat|num|multi[:width]]")
            name, kind, width = (parts + ["cat", "1"][len(parts) - 1 :])[:3]
            if not width.isdigit():
                raise ValueError(f"{item!r}: width must be a whole number, got {width!r}")
            if any(f.name == name for f in fields):
                raise ValueError(f"{item!r}: field {name!r} is named twice")
            fields.append(Field(name, kind, int(width)))
        if buckets < 2:
            raise ValueError(f"buckets must be at least 2 (id 0 is padding), got {buckets}")
        return cls(fields=tuple(fields), buckets=buckets, user_id=user_id)

    def to_dict(self) -> dict:
        return {"buckets": self.buckets, "user_id": self.user_id, "fields": [asdict(f) for f in self.fields]}

    @classmethod
    def from_dict(cls, d: Mapping) -> FeatureSpec:
        return cls(
            fields=tuple(Field(**f) for f in d["fields"]),
            buckets=int(d["buckets"]),
            user_id=bool(d.get("user_id", True)),
        )


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
        self._names = tuple(f.name for f in spec.fields)
        #: Features of encoded rows that the spec does not name (ignored), counted.
        self.unknown_features = 0

    def _hash(self, token: str) -> int:
        # 0 is the padding id; real tokens land in [1, buckets). "surrogatepass": a lone surrogate (valid in a
        # Python str, not in UTF-8) is still one stable token.
        return 1 + zlib.crc32(token.encode("utf-8", "surrogatepass")) % (self.spec.buckets - 1)

    def _column(self, name: str, values: Sequence, fn) -> list:
        """``fn(value)`` for each value, through the column's cache. Only strings are cached: ``1 == 1.0 == True``
        as keys, but they encode differently, and an encoding must not depend on which came first."""
        cache = self._caches.setdefault(name, {})
        get = cache.get
        out = [get(v) for v in values]  # only str keys are stored, and no number equals a str
        if None not in out:
            return out
        for i, v in enumerate(values):
            if out[i] is None:
                cached = type(v) is str
                hit = cache.get(v) if cached else None  # a value seen earlier in this batch is cached now
                out[i] = fn(v) if hit is None else hit
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
        users, items, feats = zip(*rows)
        # Every field's values in one pass over the rows (a feature value is never None: the event and request
        # schemas say so), so the features the spec does not name are the keys left over.
        names = self._names
        columns = list(zip(*[tuple(map(d.get, names)) for d in feats])) if names else []
        self.unknown_features += sum(map(len, feats)) - sum(len(c) - c.count(None) for c in columns)
        col = 0
        for name, values in (("user_id", users), ("item_id", items))[0 if self.spec.user_id else 1 :]:
            ids[:, col] = self._column(name, values, lambda v, name=name: self._hash(f"{name}={v}"))
            vals[:, col] = 1.0
            col += 1
        for f, values in zip(self.spec.fields, columns):
            if f.kind == "cat":
                ids[:, col] = self._column(f.name, values, lambda v, f=f: self._category(f, v))
                vals[:, col] = ids[:, col] > 0
            elif f.kind == "num":
                x = np.array([_number(v) for v in values], dtype=np.float64)
                present = ~np.isnan(x)
                ids[present, col] = self._hash(f"{f.name}#")
                vals[present, col] = np.sign(x[present]) * np.log1p(np.abs(x[present]))
            else:
                cells = self._column(f.name, values, lambda v, f=f: self._multi(f, v))
                ids[:, col : col + f.width] = _rows(cells, 0, np.int64, f.width)
                vals[:, col : col + f.width] = _rows(cells, 1, np.float32, f.width)
            col += f.width
        return ids, vals

    def _category(self, f: Field, value) -> int:
        """A categorical field's slot id: padding (0) when absent or empty."""
        text = _text(value)
        return self._hash(f"{f.name}={text}") if text else 0

    def _multi(self, f: Field, value) -> tuple[bytes, bytes]:
        """A multi field's ``width`` slots: its first ``width`` non-blank tokens at ``1/k`` each, then padding; as
        the packed int64 ids and float32 weights, so a column of them is one ``bytes.join`` (8x faster than numpy
        reading lists of lists)."""
        tokens = [t for t in (t.strip() for t in _text(value).split(f.sep)) if t][: f.width]
        pad = f.width - len(tokens)
        weight = [1.0 / len(tokens)] * len(tokens) if tokens else []
        return (
            np.array([self._hash(f"{f.name}={t}") for t in tokens] + [0] * pad, np.int64).tobytes(),
            np.array(weight + [0.0] * pad, np.float32).tobytes(),
        )

    def user_rows(self, users: Sequence[str]) -> np.ndarray:
        """The ids of ``users``' user-id slot (as :meth:`encode` gives them), int64."""
        if not self.spec.user_id:
            raise ValueError("this feature spec has no user-id slot")
        return np.array(self._column("user_id", users, lambda v: self._hash(f"user_id={v}")), dtype=np.int64)

    def encode_events(self, events: Sequence) -> tuple[np.ndarray, np.ndarray]:
        return self.encode((e.user_id, e.item_id, e.features) for e in events)


def _rows(cells: list, part: int, dtype, width: int) -> np.ndarray:
    """The ``[n, width]`` array of the packed rows ``cells[i][part]``."""
    return np.frombuffer(b"".join([c[part] for c in cells]), dtype).reshape(-1, width)


def _text(value) -> str:
    """A feature value as the text it is hashed by: ``""`` for none, a whole float as an integer (``3.0`` -> ``"3"``,
    so that a producer sending 3 and one sending 3.0 or "3" name one category)."""
    if value is None:
        return ""
    if type(value) is float and value.is_integer():
        value = int(value)
    try:
        return str(value)
    except ValueError:  # an int past Python's 4,300-digit limit for decimal text: hexadecimal is unlimited
        return hex(value)


def _number(value) -> float:
    """A numeric feature's value, NaN (absent) for none, a string that is not a number, or a non-finite number."""
    if value is None:
        return math.nan
    try:
        x = float(value)
    except (TypeError, ValueError, OverflowError):
        return math.nan
    return x if math.isfinite(x) else math.nan
