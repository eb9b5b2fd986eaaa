"""The offline evaluation's light settings, importable without torch (``stream-ctr evaluate --help`` reads them).

>>> MODES["ft_lc"], CloudConfig().max_epochs
('lc', 10)
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MODES", "CloudConfig"]

#: Evaluation mode -> the fine-tuning target correction it uses (``cloud`` fine-tunes nothing; ``ft_auto``
#: trains nothing of its own: it is ``ft`` or one of the label-correction modes run beside it, chosen on the
#: validation split by :func:`stream_ctr.quality.auto.choose`).
MODES = {
    "cloud": None,
    "ft": "none",
    "ft_lc": "lc",
    "ft_reweight": "reweight",
    "ft_logit": "logit",
    "ft_lc_evidence": "lc_evidence",
    "ft_lc_significant": "lc_significant",
    "ft_lc_bias": "lc_bias",
    "ft_auto": "auto",
}


@dataclass(frozen=True)
class CloudConfig:
    """How the cloud (global) model is trained offline."""

    max_epochs: int = 10
    patience: int = 1
    lr: float = 5e-3
    batch: int = 256
    embed_dim: int = 8
    hidden: tuple[int, ...] = (64, 32)
