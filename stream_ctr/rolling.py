"""Each user's click rate: lifetime counts plus a rolling window.

The window is a shift register of label bits (one Python int, so a 100-event window costs ~40 bytes, not a deque
of objects); its mean is a river ``stats.Mean`` driven through river's ``update``/``revert`` protocol as labels
enter and leave.

>>> ctr = UserCTR(window=3)
>>> for y in (1, 1, 0, 0): ctr.update(y)
>>> (ctr.n, ctr.clicks, round(ctr.window_ctr, 3))
(4, 2, 0.333)
>>> UserCTR.from_bytes(ctr.to_bytes(), window=3).window_labels
[1, 0, 0]
"""

from __future__ import annotations

import struct

from river import stats

from .correction import shrunk_ctr

__all__ = ["UserCTR"]

_HEADER = struct.Struct("<IIH")  # lifetime n, lifetime clicks, labels in window


class UserCTR:
    """Lifetime and windowed click counts of one user, with a compact binary form (labels packed as bits)."""

    __slots__ = ("n", "clicks", "size", "_bits", "_k", "_mean")

    def __init__(self, window: int):
        self.n = 0
        self.clicks = 0
        self.size = window
        self._bits = 0  # bit i = the label i events ago (bit 0 = newest)
        self._k = 0     # labels currently in the window
        self._mean = stats.Mean()

    def update(self, label: int) -> None:
        label = int(label)
        self.n += 1
        self.clicks += label
        if self._k == self.size:
            self._mean.revert((self._bits >> (self.size - 1)) & 1)
        else:
            self._k += 1
        self._bits = ((self._bits << 1) | label) & ((1 << self.size) - 1)
        self._mean.update(label)

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
        return self._mean.get() if self._k else 0.0

    @property
    def lifetime_ctr(self) -> float:
        return self.clicks / self.n if self.n else 0.0

    def estimate(self, p_g: float, shrinkage: float) -> float:
        """The local CTR p_u used for correction: the window's rate shrunk toward ``p_g``."""
        return shrunk_ctr(self.window_ctr * self._k, self._k, p_g, shrinkage)

    def to_bytes(self) -> bytes:
        return _HEADER.pack(self.n, self.clicks, self._k) + self._bits.to_bytes((self._k + 7) // 8, "little")

    @classmethod
    def from_bytes(cls, data: bytes, window: int) -> "UserCTR":
        n, clicks, k = _HEADER.unpack_from(data)
        bits = int.from_bytes(data[_HEADER.size: _HEADER.size + (k + 7) // 8], "little")
        ctr = cls(window)
        for i in range(min(k, window) - 1, -1, -1):  # replay oldest first
            ctr.update((bits >> i) & 1)
        ctr.n, ctr.clicks = n, clicks
        return ctr
