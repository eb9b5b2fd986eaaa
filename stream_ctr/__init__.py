"""stream-ctr: per-user CTR personalisation with label correction, on Kafka click streams."""

from importlib import import_module

from stream_ctr.config import ConfigError, Settings
from stream_ctr.contracts.events import Event, InvalidEvent, parse_event
from stream_ctr.learning.correction import correct, shrunk_ctr
from stream_ctr.learning.heads import UserHead
from stream_ctr.quality.metrics import auc, gauc, logloss

__all__ = [
    "ARMS",
    "ConfigError",
    "Event",
    "InvalidEvent",
    "Settings",
    "UserHead",
    "auc",
    "correct",
    "gauc",
    "logloss",
    "parse_event",
    "shrunk_ctr",
    "test_then_train",
]
__version__ = "0.1.0"


def __getattr__(name: str):
    """``ARMS`` and ``test_then_train`` load on first use: they bring torch, which the CLI's ``--help`` does
    not need."""
    if name in ("ARMS", "test_then_train"):
        return getattr(import_module(".learning.loop", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
