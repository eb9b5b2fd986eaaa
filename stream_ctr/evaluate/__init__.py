"""Offline reproduction of arXiv 2211.01163: model families x {cloud, ft, ft + label correction, ...}.

Protocol and file layout: docs/EVALUATION.md. Modules, one concept each: :mod:`.split` (the per-user time
split), :mod:`.cloud` (the cloud model), :mod:`.finetune` (head and full fine-tuning), :mod:`.tuning` (the
validation grid), :mod:`.experiment` (the whole run), :mod:`.report` and
:mod:`.plots` (outputs), :mod:`.datasets` and :mod:`.cli` (``stream-ctr evaluate``).
"""

from .experiment import MODES, EvalConfig, Result, run_experiment
from .split import Protocol, split_events

__all__ = ["EvalConfig", "MODES", "Protocol", "Result", "run_experiment", "split_events"]
