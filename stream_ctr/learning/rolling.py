"""Each user's click rate: lifetime counts plus a rolling window.

The window is a shift register of label bits (one Python int, so a 100-event window costs ~40 bytes, not a deque
of objects); a batch of a user's labels enters it in one shift (:meth:`UserCTR.update_many`), and its click count
is the register's popcount, so nothing is replayed label by label, neither on update nor on restore.

>>> ctr = UserCTR(window=3)
>>> for y in (1, 1, 0, 0): ctr.update(y)
>>> (ctr.n, ctr.clicks, round(ctr.window_ctr, 3))
(4, 2, 0.333)
>>> UserCTR.from_bytes(ctr.to_bytes(), window=3).window_labels
[1, 0, 0]
"""

from __future__ import annotations

import struct

import numpy as np

from stream_ctr.learning.correction import shrunk_ctr

__all__ = ["UserCTR"]

_HEADER = struct.Struct("<IIH")  # lifetime n, lifetime clicks, labels in window


class UserCTR:
    """Lifetime and windowed click counts of one user, with a compact binary form (labels packed as bits)."""

    __slots__ = ("n", "clicks", "size", "_bits", "_k")

    def __init__(self, window: int):
        self.n = 0
        self.clicks = 0
        self.size = window
        self._bits = 0  # bit i = the label i events ago (bit 0 = newest)
        self._k = 0  # labels currently in the window

    def update(self, label: int) -> None:
        label = int(label)
        self.n += 1
        self.clicks += label
        self._k = min(self._k + 1, self.size)
        self._bits = ((self._bits << 1) | label) & ((1 << self.size) - 1)

    def update_many(self, labels: np.ndarray) -> None:
        """:meth:`update` with each of ``labels`` (0/1, oldest first), in one shift of the register."""
        m = len(labels)
        if not m:
            return
        packed = 0
        for label in labels[-self.size :].tolist():  # only the newest ``size`` can stay in the window
            packed = (packed << 1) | (label > 0.5)
        self.n += m
        self.clicks += int(np.count_nonzero(labels))
        self._k = min(self._k + m, self.size)
        self._bits = ((self._bits << min(m, self.size)) | packed) & ((1 << self.size) - 1)

    def copy(self) -> UserCTR:
        twin = UserCTR(self.size)
        twin.n, twin.clicks, twin._bits, twin._k = self.n, self.clicks, self._bits, self._k
        return twin

    @property
    def window_labels(self) -> list[int]:
        """Labels in the window, oldest first."""
        return [(self._bits >> i) & 1 for i in range(self._k - 1, -1, -1)]

    @property
    def window_clicks(self) -> int:
        return self._bits.bit_count()

    @property
    def window_n(self) -> int:
        return self._k

    @property
    def window_ctr(self) -> float:
        return self.window_clicks / self._k if self._k else 0.0

    @property
    def lifetime_ctr(self) -> float:
        return self.clicks / self.n if self.n else 0.0

    def estimate(self, p_g: float, shrinkage: float) -> float:
        """The local CTR p_u used for correction: the window's rate shrunk toward ``p_g``."""
        return shrunk_ctr(self.window_clicks, self._k, p_g, shrinkage)

    def to_bytes(self) -> bytes:
        return _HEADER.pack(self.n, self.clicks, self._k) + self._bits.to_bytes((self._k + 7) // 8, "little")

    @classmethod
    def from_bytes(cls, data: bytes, window: int) -> UserCTR:
        n, clicks, k = _HEADER.unpack_from(data)
        bits = int.from_bytes(data[_HEADER.size : _HEADER.size + (k + 7) // 8], "little")
        ctr = cls(window)
        ctr.n, ctr.clicks, ctr._k = n, clicks, min(k, window)
        ctr._bits = bits & ((1 << window) - 1)
        return ctr
