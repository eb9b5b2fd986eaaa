"""The five CTR model families, built by name from a :class:`ModelConfig`.

>>> import torch
>>> m = build_model(ModelConfig("deepfm", slots=3, buckets=64))
>>> logit, rep = m(torch.ones(2, 3, dtype=torch.long), torch.ones(2, 3))
>>> tuple(logit.shape), tuple(rep.shape) == (2, m.rep_dim)
((2,), True)
"""

from stream_ctr.models.base import CTRModel, ModelConfig, embedding_tables, infer, train_step
from stream_ctr.models.dcn import DCNv2
from stream_ctr.models.deepfm import DeepFM
from stream_ctr.models.fm import FM
from stream_ctr.models.lr import LogisticRegression
from stream_ctr.models.wide_deep import WideDeep

__all__ = ["CTRModel", "FAMILIES", "ModelConfig", "build_model", "embedding_tables", "infer", "train_step"]

FAMILIES: dict[str, type[CTRModel]] = {cls.family: cls for cls in (LogisticRegression, FM, WideDeep, DeepFM, DCNv2)}


def build_model(cfg: ModelConfig, seed: int | None = None) -> CTRModel:
    """Build an initialised model of ``cfg.family``; ``seed`` makes initialisation reproducible."""
    if cfg.family not in FAMILIES:
        raise ValueError(f"unknown model family {cfg.family!r}; choose from {sorted(FAMILIES)}")
    if seed is None:
        return FAMILIES[cfg.family](cfg)
    import torch

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return FAMILIES[cfg.family](cfg)
