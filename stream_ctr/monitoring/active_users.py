"""The worker's in-memory working set of users: who was active lately, their local-vs-global gap and partition.

The per-user *state* lives in the users table (RAM with the memory store, disk with RocksDB); this is only what
the worker's metrics read per user: the drift histograms (one |p_u - p_g| and one |z| of
:func:`~stream_ctr.learning.drift.user_z` per active user) and the user count, and the partition that tells a rebalance
whose entries to drop. A user idle for longer than ``idle_s`` leaves it, and it never holds more than
``capacity`` users (least recently active leave first), so memory stays bounded however many users the stream
brings; a user who comes back re-enters on the next event, state intact in the table.

>>> a = ActiveUsers(idle_s=60, capacity=2)
>>> a.touch({"u1": 0.1, "u2": -0.2}, {"u1": 1.0, "u2": -4.0}, {"u1": 0, "u2": 1}, now=0)
>>> a.touch({"u3": 0.3}, {"u3": 2.0}, {"u3": 0}, now=10)  # over capacity: u1, least recently active, leaves
>>> a.drifts().tolist(), a.zscores().tolist()
([0.2, 0.3], [4.0, 2.0])
>>> sorted(a), a.evict(now=65)  # u2 idle for 65 s
(['u2', 'u3'], 1)
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping

import numpy as np

__all__ = ["ActiveUsers"]


class ActiveUsers:
    def __init__(self, idle_s: float, capacity: int):
        self.idle_s, self.capacity = idle_s, capacity
        # user -> (|p_u - p_g|, |z|, partition, last seen), least recently seen first
        self._users: OrderedDict[str, tuple[float, float, int, float]] = OrderedDict()

    def touch(
        self, gaps: Mapping[str, float], z: Mapping[str, float], partitions: Mapping[str, int], now: float
    ) -> None:
        """The users of a batch were active at ``now`` with these ``gaps`` (p_u - p_g) and ``z`` scores on these
        ``partitions``."""
        for user, gap in gaps.items():
            self._users[user] = (abs(gap), abs(z[user]), partitions.get(user, -1), now)
            self._users.move_to_end(user)
        self.evict(now)

    def evict(self, now: float) -> int:
        """Drop users idle for longer than ``idle_s``, and the least recently active beyond ``capacity``."""
        gone = 0
        while self._users:
            user, (*_, seen) = next(iter(self._users.items()))
            if len(self._users) <= self.capacity and now - seen <= self.idle_s:
                break
            del self._users[user]
            gone += 1
        return gone

    def keep_partitions(self, partitions: set[int]) -> int:
        """After a rebalance: drop the users of partitions no longer owned (their new owner exports them), so
        counts summed over workers stay exact. Returns how many left."""
        gone = [u for u, (_, _, p, _) in self._users.items() if p not in partitions]
        for user in gone:
            del self._users[user]
        return len(gone)

    def forget(self, user: str) -> bool:
        """Drop ``user`` from the working set (an erasure); returns whether it was there."""
        return self._users.pop(user, None) is not None

    def drifts(self) -> np.ndarray:
        """|p_u - p_g| of every active user."""
        return np.fromiter((v[0] for v in self._users.values()), dtype=float, count=len(self._users))

    def zscores(self) -> np.ndarray:
        """|z| of every active user (:func:`~stream_ctr.learning.drift.user_z`)."""
        return np.fromiter((v[1] for v in self._users.values()), dtype=float, count=len(self._users))

    def __len__(self) -> int:
        return len(self._users)

    def __iter__(self) -> Iterator[str]:
        return iter(self._users)
