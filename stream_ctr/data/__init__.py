"""Click data sources: MovieLens-100K (from the recbole package), the synthetic generator, and user files."""

from stream_ctr.data.movielens import load_movielens_100k
from stream_ctr.data.synthetic import SyntheticConfig, generate_synthetic

__all__ = ["SyntheticConfig", "generate_synthetic", "load_dataset", "load_movielens_100k"]


def load_dataset(name: str, limit: int | None = None, seed: int = 0):
    """Events of a named dataset in timestamp order: ``ml-100k`` or ``synthetic``."""
    if name == "ml-100k":
        events = load_movielens_100k()
    elif name == "synthetic":
        events = generate_synthetic(SyntheticConfig(seed=seed)).events
    else:
        raise ValueError(f"unknown dataset {name!r}; choose ml-100k or synthetic")
    return events[:limit] if limit else events
