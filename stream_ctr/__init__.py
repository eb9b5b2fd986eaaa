"""stream-ctr: per-user CTR personalisation with label correction, on Kafka click streams."""

from .config import ConfigError, Settings
from .correction import correct, shrunk_ctr
from .events import Event, InvalidEvent, parse_event
from .heads import UserHead
from .learning import ARMS, test_then_train
from .metrics import auc, gauc, logloss

__all__ = [
    "ARMS", "ConfigError", "Event", "InvalidEvent", "Settings", "UserHead", "auc", "correct", "gauc", "logloss",
    "parse_event", "shrunk_ctr", "test_then_train",
]
__version__ = "0.1.0"
