"""Scored rows kept for a windowed gAUC: one user key, one label and one score per column each, in preallocated
arrays, so memory is fixed by the capacity whatever the number of users or events.

A *ring* holds the newest ``capacity`` rows (a new row overwrites the oldest); otherwise rows are appended until
``capacity`` and the rest dropped, and the owner thins them with :meth:`ScoreRows.keep`. The one store behind the
online metrics' window and user sample (:mod:`.online_metrics`) and the A/B results' window per arm
(:mod:`stream_ctr.experiments.attribution`). :meth:`ScoreRows.view` is in storage order, not time order: every
metric read from it (:func:`~stream_ctr.quality.metrics.per_user_auc`) ignores row order.

>>> rows = ScoreRows(("ft",), capacity=3)
>>> for n in range(5): rows.append(user=n, label=n % 2, scores=(n / 10,))
>>> users, labels, scores = rows.view()
>>> users.tolist(), labels.tolist(), [round(s, 2) for s in scores["ft"].tolist()]  # rows 3 and 4 overwrote 0, 1
([3, 4, 2], [1.0, 0.0, 0.0], [0.3, 0.4, 0.2])
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

__all__ = ["ScoreRows"]


class ScoreRows:
    """``users`` (int64 keys), ``labels`` and ``scores[column]`` (float32): a ring of the newest ``capacity`` rows,
    or (``ring=False``) the first ``capacity`` rows appended."""

    def __init__(self, columns: Iterable[str], capacity: int, ring: bool = True):
        self.capacity, self.ring = capacity, ring
        self.users = np.empty(capacity, dtype=np.int64)
        self.labels = np.empty(capacity, dtype=np.float32)
        self.scores = {column: np.empty(capacity, dtype=np.float32) for column in columns}
        self._columns = tuple(self.scores.values())
        self.size = 0  # rows held
        self.pos = 0  # next write position, ``capacity`` once full (a ring then wraps to 0)

    def add(self, users: np.ndarray, labels: np.ndarray, scores: Mapping[str, np.ndarray]) -> None:
        """A batch of rows, oldest first (a ring keeps the newest ``capacity`` of them)."""
        n = len(labels)
        if self.ring:
            if n >= self.capacity:
                users, labels = users[-self.capacity :], labels[-self.capacity :]
                scores = {c: s[-self.capacity :] for c, s in scores.items()}
                n = self.capacity
            idx = (self.pos + np.arange(n)) % self.capacity
            self.pos = (self.pos + n) % self.capacity
            self.size = min(self.size + n, self.capacity)
        else:
            n = min(n, self.capacity - self.pos)
            idx = np.arange(self.pos, self.pos + n)
            self.pos += n
            self.size = self.pos
        self.users[idx], self.labels[idx] = users[:n], labels[:n]
        for column, s in scores.items():
            self.scores[column][idx] = s[:n]

    def append(self, user: int, label: float, scores: Sequence[float]) -> None:
        """One row, its scores in column order: :meth:`add` without building arrays (a per-event hot path)."""
        i = self.pos
        if i == self.capacity:  # full: a ring wraps to its oldest row, appending drops the row
            if not self.ring:
                return
            i = 0
        self.pos = i + 1
        if self.size < self.pos:
            self.size = self.pos
        self.users[i] = user
        self.labels[i] = label
        for column, s in zip(self._columns, scores):
            column[i] = s

    def view(self) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """``(users, labels, {column: scores})`` of the rows held: views, not copies."""
        s = self.size
        return self.users[:s], self.labels[:s], {c: v[:s] for c, v in self.scores.items()}

    def forget(self, user: int) -> int:
        """Drop every row of ``user`` (an erasure); returns how many there were. A ring keeps its other rows in
        time order, packed at the front (not full any more)."""
        mine = self.view()[0] == user
        gone = int(mine.sum())
        if not gone:
            return 0
        if not self.ring:
            self.keep(~mine)
            return gone
        full = self.size == self.capacity
        order = np.r_[self.pos : self.capacity, 0 : self.pos] if full else np.arange(self.size)  # oldest first
        order = order[~mine[order]]
        self.users[: len(order)] = self.users[order]
        self.labels[: len(order)] = self.labels[order]
        for column in self._columns:
            column[: len(order)] = column[order]
        self.size = self.pos = len(order)
        return gone

    def keep(self, mask: np.ndarray) -> None:
        """Keep only the rows held where ``mask`` (one bool per row of :meth:`view`) is true, compacted to the front;
        appending goes on after them. Appended rows only: a ring's write position would lose its meaning."""
        if self.ring:
            raise ValueError("keep() thins appended rows, not a ring")
        u, y, s = self.view()
        n = int(np.count_nonzero(mask))
        u, y, s = u[mask], y[mask], {c: v[mask] for c, v in s.items()}  # copies: the arrays are rewritten below
        self.users[:n], self.labels[:n] = u, y
        for column, v in s.items():
            self.scores[column][:n] = v
        self.size = self.pos = n
