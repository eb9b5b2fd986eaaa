"""Offline reproduction of arXiv 2211.01163: model families x {cloud, ft, ft + label correction, ...}.

Protocol and file layout: docs/EVALUATION.md. Modules, one concept each: :mod:`.split` (the per-user time
split), :mod:`.cloud` (the cloud model), :mod:`.finetune` (head and full fine-tuning), :mod:`.tuning` (the
validation grid), :mod:`.experiment` (the whole run), :mod:`.report` and
:mod:`.plots` (outputs), :mod:`.datasets` and :mod:`.cli` (``stream-ctr evaluate``).
"""

from importlib import import_module

__all__ = ["EvalConfig", "MODES", "Protocol", "Result", "run_experiment", "split_events"]

_HOME = {
    "EvalConfig": ".experiment",
    "Result": ".experiment",
    "run_experiment": ".experiment",
    "MODES": ".config",
    "Protocol": ".split",
    "split_events": ".split",
}


def __getattr__(name: str):
    """Names load on first use, so ``stream-ctr evaluate --help`` does not import torch."""
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_HOME[name], __name__), name)
