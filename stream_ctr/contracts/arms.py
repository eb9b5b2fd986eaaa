"""The arms of stream-ctr, named once: what each one does to a user's head, and which comparisons are reported.

- ``global``: the global model's snapshot alone, no per-user head (the control arm of an experiment);
- ``ft``: a per-user head fine-tuned on the raw labels;
- ``ft_lc``: a per-user head fine-tuned on label-corrected targets (:mod:`stream_ctr.learning.correction`).

>>> ARMS, FINE_TUNED["ft_lc"], CONTROL
(('global', 'ft', 'ft_lc'), 'lc', 'global')
"""

from __future__ import annotations

__all__ = ["ARMS", "CONTROL", "FINE_TUNED", "PAIRS"]

#: Fine-tuned arm -> the correction method its head learns under (:func:`stream_ctr.learning.correction.correct`).
FINE_TUNED: dict[str, str] = {"ft": "none", "ft_lc": "lc"}

#: The control arm: no head, the global model only.
CONTROL = "global"

#: Every arm, control first.
ARMS: tuple[str, ...] = (CONTROL, *FINE_TUNED)

#: Arm comparisons reported with confidence intervals: (arm, baseline).
PAIRS: tuple[tuple[str, str], ...] = (("ft", "global"), ("ft_lc", "global"), ("ft_lc", "ft"))
