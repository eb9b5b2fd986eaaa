"""Model deltas: what the global model changed since the previous version, so scorers follow it within samples.

A full snapshot (:class:`~stream_ctr.models.snapshot.Snapshot`, about 1.2 MB for the default DeepFM) is too heavy to
publish every few samples, but one training step changes only the embedding rows its batch used (a few dozen
of the 32,768) plus the small dense layers. A :class:`Delta` carries those rows, and the dense layers every
``dense_every`` deltas: Monolith's split of fresh sparse parameters and less frequent dense ones. Versions form a
chain: delta ``v`` applies to version ``v - 1`` (its ``base``) and nothing else, so a scorer that missed one
waits for the next full snapshot instead of serving a model that never existed (docs/ARCHITECTURE.md, "Model
freshness").

Wire format: ``b"SCTRD1"``, a 4-byte header length, an orjson header (version, base, global CTR, samples,
``ctr.events`` offsets, publish time, newest event time learned, and the name, dtype and shape of each array),
then the arrays' raw bytes in header order.

>>> import torch
>>> from stream_ctr.models import ModelConfig, build_model
>>> model = build_model(ModelConfig("lr", slots=2, buckets=8), seed=0)
>>> d = Delta(2, 1, 0.5, 10, {0: 10}, 0.0, {"linear.weight": (np.array([3]), np.ones((1, 1), np.float32))})
>>> Delta.from_bytes(d.to_bytes()).apply_to(model)
>>> model.linear.weight[3].item(), model.linear.weight[4].item()
(1.0, 0.0)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np
import orjson
import torch

from stream_ctr.models import CTRModel, embedding_tables

__all__ = ["Delta", "is_delta"]

_MAGIC = b"SCTRD1"


def is_delta(data: bytes) -> bool:
    return data.startswith(_MAGIC)


@dataclass(frozen=True)
class Delta:
    version: int
    base: int
    global_ctr: float
    samples: int
    #: Next offset to train on per partition of ``ctr.events``, as in a snapshot.
    offsets: dict[int, int]
    #: Trainer's wall clock at publication (seconds since the epoch); scorers export their model's age from it.
    published_at: float
    #: Table key -> (row ids ``[k]`` int64, the rows' new values ``[k, dim]``).
    rows: dict[str, tuple[np.ndarray, np.ndarray]] = field(repr=False)
    #: Every dense tensor (state-dict key -> array), or None in a delta that leaves them as they were.
    dense: dict[str, np.ndarray] | None = field(default=None, repr=False)
    #: Event time (``ts``) of the newest event the weights have learned; 0 before any (and in older records).
    trained_ts: float = 0.0

    @classmethod
    def of(cls, model: CTRModel, rows: np.ndarray, with_dense: bool, **meta) -> Delta:
        """The delta of ``model``'s current weights at table rows ``rows`` (unique ids), with the dense tensors
        when ``with_dense``; ``meta`` names the version fields."""
        tables = embedding_tables(model)
        state = model.state_dict()
        idx = torch.from_numpy(rows).to(next(iter(tables.values())).weight.device)
        changed = {k: (rows, state[k].index_select(0, idx).detach().cpu().numpy()) for k in tables}
        dense = {k: v.detach().cpu().numpy() for k, v in state.items() if k not in tables} if with_dense else None
        return cls(rows=changed, dense=dense, **meta)

    def apply_to(self, model: CTRModel) -> None:
        """Write the rows (and the dense tensors, if carried) into ``model`` in place."""
        state = model.state_dict()
        with torch.no_grad():
            for key, (ids, values) in self.rows.items():
                target = state[key]
                target.index_copy_(
                    0, torch.from_numpy(ids).to(target.device), torch.from_numpy(values).to(target.device)
                )
            for key, value in (self.dense or {}).items():
                state[key].copy_(torch.from_numpy(value))

    def to_bytes(self) -> bytes:
        arrays = [(f"rows:{k}", ids) for k, (ids, _) in self.rows.items()]
        arrays += [(f"values:{k}", values) for k, (_, values) in self.rows.items()]
        arrays += [(f"dense:{k}", v) for k, v in (self.dense or {}).items()]
        arrays = [(name, np.ascontiguousarray(a)) for name, a in arrays]
        header = orjson.dumps(
            {
                "version": self.version,
                "base": self.base,
                "global_ctr": self.global_ctr,
                "samples": self.samples,
                "offsets": {str(p): o for p, o in self.offsets.items()},
                "published_at": self.published_at,
                "trained_ts": self.trained_ts,
                "dense": self.dense is not None,
                "arrays": [[name, a.dtype.str, list(a.shape)] for name, a in arrays],
            }
        )
        return b"".join([_MAGIC, struct.pack("<I", len(header)), header, *(a.tobytes() for _, a in arrays)])

    @classmethod
    def from_bytes(cls, data: bytes) -> Delta:
        if not is_delta(data):
            raise ValueError("not a stream-ctr model delta")
        (n,) = struct.unpack_from("<I", data, len(_MAGIC))
        pos = len(_MAGIC) + 4
        h = orjson.loads(data[pos : pos + n])
        pos += n
        arrays = {}
        for name, dtype, shape in h["arrays"]:
            count = int(np.prod(shape))
            arrays[name] = np.frombuffer(data, np.dtype(dtype), count, pos).reshape(shape).copy()
            pos += arrays[name].nbytes
        group = {
            kind: {name.split(":", 1)[1]: a for name, a in arrays.items() if name.startswith(kind + ":")}
            for kind in ("rows", "values", "dense")
        }
        return cls(
            int(h["version"]),
            int(h["base"]),
            float(h["global_ctr"]),
            int(h["samples"]),
            {int(p): int(o) for p, o in h["offsets"].items()},
            float(h["published_at"]),
            {k: (ids, group["values"][k]) for k, ids in group["rows"].items()},
            group["dense"] if h["dense"] else None,
            float(h.get("trained_ts", 0.0)),
        )
