"""The users' heads as a scorer process sees them: a bounded read replica of the workers' users changelog.

The personalize worker keeps each user's state (rolling CTR, heads of every arm) in a Faust table whose compacted
changelog topic gets the user's new state after every batch that touched it. A scorer process
(``stream-ctr scorer``, docs/ARCHITECTURE.md "Scorer processes") reads every partition of that changelog and keeps
the newest record of each user here, so it ranks with the same heads as the user's owner, a few milliseconds
later, without learning anything itself.

Records are kept as the bytes the changelog carries and decoded on the first read after they change: a user
whose head moves many times between two requests costs one decoding, not one per change. At most ``capacity``
users are held; the one least recently written or read goes first, and a user the replica does not hold is a
cold-start user (the global model alone), exactly as on a worker that never saw them.

>>> replica = HeadsReplica(capacity=2)
>>> replica.apply(b"7", None)  # a tombstone (an erased user) for a user never held
>>> len(replica), replica.get("7") is None
(0, True)
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Mapping

from stream_ctr.learning.state import UserState

__all__ = ["HeadsReplica"]


class HeadsReplica(Mapping[str, UserState]):
    """user id -> :class:`UserState` of the newest changelog record, at most ``capacity`` users (least recently
    used first out). A read-only :class:`Mapping`, which is what the ranker takes."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, not {capacity}")
        self.capacity = capacity
        self._users: OrderedDict[str, UserState | bytes] = OrderedDict()  # bytes: not decoded since it changed
        self.evicted = 0  # users dropped to stay within capacity
        self.unreadable = 0  # records that were no UserState (skipped; the user keeps its last readable state)

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """One changelog record: the user's new state, or (``value`` None) a tombstone erasing the user."""
        if key is None:
            return
        user = key.decode("utf-8", "replace")
        if value is None:
            self._users.pop(user, None)
            return
        self._users[user] = value
        self._users.move_to_end(user)
        while len(self._users) > self.capacity:
            self._users.popitem(last=False)
            self.evicted += 1

    def __getitem__(self, user: str) -> UserState:
        held = self._users[user]
        if isinstance(held, bytes):
            try:
                held = UserState.from_bytes(held)
            except (ValueError, IndexError, struct.error) as exc:  # a foreign record: the user is scored as cold
                self.unreadable += 1
                del self._users[user]
                raise KeyError(user) from exc
            self._users[user] = held
        self._users.move_to_end(user)
        return held

    def __contains__(self, user: object) -> bool:
        return user in self._users

    def __iter__(self):
        return iter(list(self._users))

    def __len__(self) -> int:
        return len(self._users)
