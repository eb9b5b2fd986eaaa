"""The datasets ``stream-ctr evaluate`` accepts: ``ml-100k``, ``synthetic`` or a path to a CSV/Parquet file.

All three yield ``(events, FeatureSpec)``, encoded by the same :class:`stream_ctr.contracts.features.HashingEncoder` as
the streaming path.

* ``ml-100k``: :func:`stream_ctr.data.load_movielens_100k`, with the service's default feature list
  (:class:`stream_ctr.config.Settings` ``features``).
* ``synthetic``: :func:`stream_ctr.data.generate_synthetic` with :data:`SYNTHETIC` (500 users x 120 events; a
  2-d taste the cloud model can learn from user id and item category) and the given ``drift`` (std of the users'
  prior logits) and seed.
* a path: :func:`stream_ctr.data.table.load_table` (layout in :mod:`stream_ctr.data.table`).

>>> events, spec, truth = load("synthetic", seed=0, drift=2.0, synthetic=dict(users=20, events_per_user=12))
>>> len(events), [f.name for f in spec.fields], len(truth.user_prior)
(240, ['category', 'segment'], 20)
"""

from __future__ import annotations

from dataclasses import replace

from stream_ctr.config import Settings
from stream_ctr.contracts.features import FeatureSpec
from stream_ctr.data import SyntheticConfig, generate_synthetic, load_movielens_100k
from stream_ctr.data.synthetic import FEATURES as SYNTHETIC_FEATURES
from stream_ctr.data.table import load_table

__all__ = ["SYNTHETIC", "load"]

SYNTHETIC = SyntheticConfig(users=500, items=200, events_per_user=120, dim=2, categories=8, taste=3.0)


def load(
    name: str,
    seed: int = 0,
    drift: float | None = None,
    features: str | None = None,
    buckets: int = 1 << 15,
    synthetic: dict | None = None,
    user_id: bool = True,
):
    """``(events, spec, truth)``; ``truth`` is the synthetic generator's output (known probabilities), else None.
    ``user_id=False`` keeps the user id out of the model's features."""
    events, spec, truth = _load(name, seed, drift, features, buckets, synthetic)
    return events, replace(spec, user_id=user_id), truth


def _load(name, seed, drift, features, buckets, synthetic):
    if name == "ml-100k":
        spec = FeatureSpec.parse(features or Settings().features, buckets)
        return load_movielens_100k(), spec, None
    if name == "synthetic":
        cfg = replace(SYNTHETIC, seed=seed, **(synthetic or {}))
        if drift is not None:
            cfg = replace(cfg, drift=drift)
        truth = generate_synthetic(cfg)
        return truth.events, FeatureSpec.parse(features or SYNTHETIC_FEATURES, buckets), truth
    table = load_table(name, features=features, buckets=buckets)
    return table.events, table.spec, None
