"""The offline evaluation's light settings, importable without torch (``stream-ctr evaluate --help`` reads them).

>>> MODES["ft_lc"], CloudConfig().max_epochs
('lc', 10)
"""

from __future__ import annotations

from dataclasses import dataclass

from stream_ctr.contracts.arms import FINE_TUNED
from stream_ctr.learning.correction import METHODS

__all__ = ["COMPANIONS", "DEFAULT_MODES", "GLOBAL_TRAINING", "MODES", "CloudConfig"]

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
#: The modes a run takes unless ``--modes`` names others: every correction method and ``ft_auto``.
DEFAULT_MODES: tuple[str, ...] = tuple(MODES)
#: The companion modes -> what the user trains on (:mod:`stream_ctr.evaluate.companions`): a k-sample buffer kept
#: by ODE's gradient projection, FIFO or a reservoir, or CoDA's augmentation; ``ft_<kind>`` trains on raw labels,
#: ``ft_lc_<kind>`` on label-corrected ones.
COMPANIONS: dict[str, str] = {
    f"{arm}_{kind}": kind for kind in ("ode", "fifo", "reservoir", "coda") for arm in ("ft", "ft_lc")
}
MODES.update({mode: ("lc" if mode.startswith("ft_lc_") else "none") for mode in COMPANIONS})
#: How the global (cloud) model is trained: on pooled samples, or from per-user submodel updates averaged by
#: FedAvg or FedSubAvg (:mod:`stream_ctr.evaluate.federated`).
GLOBAL_TRAINING = ("centralized", "fedavg", "fedsubavg")


@dataclass(frozen=True)
class CloudConfig:
    """How the cloud (global) model is trained offline."""

    max_epochs: int = 10
    patience: int = 1
    lr: float = 5e-3
    batch: int = 256
    embed_dim: int = 8
    hidden: tuple[int, ...] = (64, 32)
