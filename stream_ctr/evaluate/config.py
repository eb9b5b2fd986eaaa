"""The offline evaluation's light settings, importable without torch (``stream-ctr evaluate --help`` reads them).

>>> MODES["ft_lc"], CloudConfig().max_epochs
('lc', 10)
"""

from __future__ import annotations

from dataclasses import dataclass

from stream_ctr.contracts.arms import FINE_TUNED
from stream_ctr.learning.correction import METHODS

__all__ = ["MODES", "CloudConfig"]

_ARM_OF_METHOD = {method: arm for arm, method in FINE_TUNED.items()}

#: Evaluation mode -> the fine-tuning target correction it uses: ``cloud`` (the global model alone, what the
#: service calls its control arm) fine-tunes nothing; one mode per correction method, named as the service names
#: its fine-tuned arms (``ft``, ``ft_lc``) and ``ft_<method>`` for the methods no arm serves; ``ft_auto`` trains
#: nothing of its own: it is ``ft`` or one of the label-correction modes run beside it, chosen on the validation
#: split by :func:`stream_ctr.quality.auto.choose`.
MODES: dict[str, str | None] = {
    "cloud": None,
    **{_ARM_OF_METHOD.get(method, f"ft_{method}"): method for method in METHODS},
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
