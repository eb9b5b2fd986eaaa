"""``stream-ctr bench``: what the service costs, printed as numbers and as ratios to a baseline in the same run.

- :mod:`.inprocess`: trainer samples/s per family, test-then-train events/s per batch size, state and snapshot
  sizes, all in-process on MovieLens-100K;
- :mod:`.serving` (``--serving``): the scoring API through HTTP on a real worker;
- :mod:`.quality` (``--quality``): progressive AUC, logloss, calibration and gAUC of every arm at several
  snapshot cadences, beside River's online logistic regression on the same events;
- :mod:`.state` (``--state``): many distinct users through a real worker: state bytes and resident memory per
  user, and the time a killed worker takes to consume again, per table store.
"""

from .inprocess import run_bench
from .quality import run_quality_bench
from .serving import run_serving_bench
from .state import run_state_bench

__all__ = ["run_bench", "run_quality_bench", "run_serving_bench", "run_state_bench"]
