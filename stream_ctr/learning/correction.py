"""Label correction (arXiv 2211.01163) and the alternatives it is compared against. The one owner of this maths.

Before a user's fine-tuning step, the user's labels are changed so that their mean equals the global CTR
``p_g`` while every positive keeps a higher label than every negative (docs/ARCHITECTURE.md, section "Label
correction maths")::

    p_u > p_g:  positive -> p_g / p_u     negative -> 0
    p_u < p_g:  positive -> 1             negative -> (p_g - p_u) / (1 - p_u)

``p_u`` comes from :func:`shrunk_ctr`, so a user with few events is pulled toward ``p_g`` and p_u of 0 or 1
never reaches the formulas. Methods: ``none`` (labels as they are), ``lc`` (the mapping above), ``reweight``
(class-prior importance weights ``w+ = p_g/p_u``, ``w- = (1-p_g)/(1-p_u)``), ``logit`` (a training-only logit
offset ``logit(p_u) - logit(p_g)``), and three variants of ``lc`` (docs/ARCHITECTURE.md, "Label correction
maths"), each needing ``n``, the events behind ``p_u``:

- ``lc_evidence``: the mapping toward ``p_u + s (p_g - p_u)`` instead of ``p_g``, with strength
  ``s = n / (n + EVIDENCE_EVENTS)``: a user with little evidence that the prior differs is corrected less;
- ``lc_significant``: ``lc`` only when ``|p_u - p_g|`` exceeds ``SIGNIFICANT_Z`` binomial standard deviations
  of ``n`` events at ``p_g``, else the raw labels;
- ``lc_bias``: the head's bias learns the raw labels (the user's own prior, so calibration keeps it) while its
  weights learn the corrected labels at the logit shifted by ``logit(p_g) - logit(p_u)`` (the bias's prior taken
  back to the global one), so ranking within a user follows the corrected labels.

>>> import numpy as np
>>> t = correct(np.array([1, 0, 0, 0]), p_u=0.25, p_g=0.5, method="lc")
>>> t.labels.tolist(), float(t.labels.mean())
([1.0, 0.3333333432674408, 0.3333333432674408, 0.3333333432674408], 0.5)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["EVIDENCE_EVENTS", "LC_VARIANTS", "METHODS", "SIGNIFICANT_Z", "Targets", "correct", "shrunk_ctr"]

METHODS = ("none", "lc", "reweight", "logit", "lc_evidence", "lc_significant", "lc_bias")
#: The methods the service's label-corrected arm may use (``STREAM_CTR_CORRECTION``).
LC_VARIANTS = ("lc", "lc_evidence", "lc_significant", "lc_bias")
#: Events at which ``lc_evidence`` corrects half-way.
EVIDENCE_EVENTS = 50
#: Binomial standard deviations beyond which ``lc_significant`` corrects.
SIGNIFICANT_Z = 2.0

# Keeps p away from 0 and 1 so that both classes keep distinct labels and logits stay finite.
_EPS = 1e-4


@dataclass(frozen=True)
class Targets:
    """What one fine-tuning step trains on: soft labels, per-sample weights and a logit offset (one for all samples,
    or one per sample)."""

    labels: np.ndarray
    weights: np.ndarray
    logit_offset: float | np.ndarray = 0.0
    bias_labels: np.ndarray | None = None  # what a head's bias learns (None: ``labels``)


def shrunk_ctr(clicks: float, n: float, p_g: float, a: float) -> float:
    """``(clicks + a * p_g) / (n + a)``: the user's CTR pulled toward ``p_g`` by ``a`` pseudo-events."""
    if n + a <= 0:
        return p_g
    return (clicks + a * p_g) / (n + a)


def _clip(p):
    return np.minimum(np.maximum(p, _EPS), 1.0 - _EPS)  # np.clip without its Python wrappers (hot: every wave)


def _logit(p):
    return np.log(p / (1.0 - p))


def correct(labels: np.ndarray, p_u, p_g, method: str, n=0) -> Targets:
    """Targets for fine-tuning on ``labels`` (0/1) of a user with local CTR ``p_u`` (from ``n`` events) under
    global CTR ``p_g``. ``p_u``, ``p_g`` and ``n`` are numbers, or arrays with one value per label: a batch of
    several users' events is corrected in one call, each event with its own user's prior."""
    y = np.asarray(labels, dtype=np.float32)
    ones = np.ones_like(y)
    if method == "none":
        return Targets(y, ones)
    p_u, p_g = _clip(p_u), _clip(p_g)
    if method == "lc_evidence":
        return correct(y, p_u, p_u + n / (n + EVIDENCE_EVENTS) * (p_g - p_u), "lc")
    if method == "lc_significant":
        noise = np.sqrt(p_g * (1.0 - p_g) / np.maximum(n, 1))
        corrected = correct(y, p_u, p_g, "lc").labels
        return Targets(np.where(np.abs(p_u - p_g) > SIGNIFICANT_Z * noise, corrected, y), ones)
    if method == "lc_bias":
        return Targets(correct(y, p_u, p_g, "lc").labels, ones, _logit(p_g) - _logit(p_u), bias_labels=y)
    if method == "lc":
        positive = np.where(p_u > p_g, p_g / p_u, 1.0)  # p_u > p_g: a click counts p_g / p_u
        negative = np.where(p_u < p_g, (p_g - p_u) / (1.0 - p_u), 0.0)  # p_u < p_g: a skip counts this much
        return Targets(np.where(y > 0.5, positive, negative).astype(np.float32), ones)
    if method == "reweight":
        w = np.where(y > 0.5, p_g / p_u, (1.0 - p_g) / (1.0 - p_u))
        return Targets(y, w.astype(np.float32))
    if method == "logit":
        return Targets(y, ones, _logit(p_u) - _logit(p_g))
    raise ValueError(f"unknown correction method {method!r}; choose from {METHODS}")
