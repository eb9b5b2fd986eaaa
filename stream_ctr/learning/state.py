"""Per-user state of the personalize agent and its compact binary encoding.

One record per user: rolling CTR counts, one head per fine-tuned arm, the last applied offset (so a
redelivered event is not learned twice), the model version the heads are anchored to, and ``experiment_key``,
which experiment (:meth:`stream_ctr.experiments.assignment.Experiment.key`) already counted this user among its arm's
users (so the sample-ratio check counts each user once, with no set of users in memory), and ``drift_since``,
the event time at which the user's window CTR left the user's band around the global CTR (0 while inside it;
:mod:`stream_ctr.learning.drift`).

>>> s = UserState.new(window=10, rep_dim=4, arms=("ft", "ft_lc"))
>>> s.ctr.update(1); s.last_offset = 41
>>> t = UserState.from_bytes(s.to_bytes())
>>> (t.ctr.n, t.last_offset, sorted(t.heads), len(s.to_bytes()))
(1, 41, ['ft', 'ft_lc'], 103)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from stream_ctr.learning.heads import UserHead
from stream_ctr.learning.rolling import UserCTR

__all__ = ["UserState"]

_MAGIC = b"U3"
# magic, last_offset, anchor_version, reanchors, window, n_heads, experiment, drift_since
_HEADER = struct.Struct("<2sqqIHBId")
_HEADER_U2 = struct.Struct("<2sqqIHBI")  # before drift_since: read as 0 (not drifting)
_HEADER_U1 = struct.Struct("<2sqqIHB")  # before experiment_key: read as experiment_key 0


@dataclass
class UserState:
    ctr: UserCTR
    heads: dict[str, UserHead]
    window: int
    last_offset: int = -1
    anchor_version: int = -1
    reanchors: int = 0
    experiment_key: int = 0
    drift_since: float = 0.0

    @classmethod
    def new(cls, window: int, rep_dim: int, arms: tuple[str, ...]) -> UserState:
        return cls(UserCTR(window), {arm: UserHead(rep_dim) for arm in arms}, window)

    def reanchor(self, version: int, rep_dim: int) -> None:
        """Move the heads onto model ``version``.

        The trainer fine-tunes one backbone continuously, so version v+1's representation is close to v's and
        the learned weights stay meaningful: they are kept, not reset. Only a change of width (a different
        model family or config) forces a fresh head, which is counted.
        """
        if version == self.anchor_version:
            return
        for arm, head in self.heads.items():
            if len(head.w) != rep_dim:
                self.heads[arm] = UserHead(rep_dim, head.lr, head.l2, head.steps)
        if self.anchor_version >= 0:
            self.reanchors += 1
        self.anchor_version = version

    def drifting(self, outside: bool, ts: float) -> None:
        """The user's window CTR is ``outside`` its band after the event at ``ts``: an episode starts (or goes on)
        or ends."""
        if not outside:
            self.drift_since = 0.0
        elif not self.drift_since:
            self.drift_since = ts or 1e-9  # an event at ts 0 still starts an episode

    def summary(self) -> dict:
        """What an operator sees at ``GET /v1/users/{user_id}``."""
        return {
            "events": self.ctr.n,
            "clicks": self.ctr.clicks,
            "local_ctr": self.ctr.lifetime_ctr,
            "window_ctr": self.ctr.window_ctr,
            "window_events": self.ctr.window_n,
            "last_applied_offset": self.last_offset,
            "model_version": self.anchor_version,
            "reanchors": self.reanchors,
            "drifting": bool(self.drift_since),
            "drifting_since": self.drift_since or None,
            "head_norm": {arm: head.norm for arm, head in self.heads.items()},
            "state_bytes": len(self.to_bytes()),
        }

    def to_bytes(self) -> bytes:
        parts = [
            _HEADER.pack(
                _MAGIC,
                self.last_offset,
                self.anchor_version,
                self.reanchors,
                self.window,
                len(self.heads),
                self.experiment_key,
                self.drift_since,
            )
        ]
        for arm, head in self.heads.items():
            name = arm.encode()
            parts += [bytes([len(name)]), name, head.to_bytes()]
        ctr = self.ctr.to_bytes()
        parts += [struct.pack("<H", len(ctr)), ctr]
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> UserState:
        header = {b"U1": _HEADER_U1, b"U2": _HEADER_U2, _MAGIC: _HEADER}.get(data[:2])
        if header is None:
            raise ValueError(f"not a UserState record (magic {data[:2]!r})")
        fields = header.unpack_from(data)
        _, last_offset, anchor, reanchors, window, n_heads = fields[:6]
        # Older headers end early: their missing trailing fields read as "none yet".
        exp = fields[6] if len(fields) > 6 else 0
        since = fields[7] if len(fields) > 7 else 0.0
        off = header.size
        heads = {}
        for _ in range(n_heads):
            k = data[off]
            arm = data[off + 1 : off + 1 + k].decode()
            head = UserHead(0)
            off = head.load_bytes(data, off + 1 + k)
            heads[arm] = head
        (k,) = struct.unpack_from("<H", data, off)
        ctr = UserCTR.from_bytes(data[off + 2 : off + 2 + k], window)
        return cls(ctr, heads, window, last_offset, anchor, reanchors, exp, since)
