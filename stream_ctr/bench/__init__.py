"""``stream-ctr bench``: what the service costs, printed as numbers and as ratios to a baseline in the same run.

- :mod:`.inprocess`: trainer samples/s per family, test-then-train events/s per batch size, state and snapshot
  sizes, all in-process on MovieLens-100K;
- :mod:`.serving` (``--serving``): the scoring API through HTTP on a real worker;
- :mod:`.quality` (``--quality``): progressive AUC, logloss, calibration and gAUC of every arm at several
  snapshot cadences, beside River's online logistic regression on the same events;
- :mod:`.state` (``--state``): many distinct users through a real worker: state bytes and resident memory per
  user, and the time a killed worker takes to consume again, per table store;
- :mod:`.pipeline` (``--pipeline``): the worker draining a pre-filled ``ctr.events`` with 1 and 2 processes,
  against a raw aiokafka consumer of the same topic in the same run.

``--json FILE`` runs all but ``--quality`` and writes the headline numbers (:func:`headline`).
"""

from stream_ctr.bench.inprocess import run_bench
from stream_ctr.bench.pipeline import run_pipeline_bench
from stream_ctr.bench.quality import run_quality_bench
from stream_ctr.bench.serving import run_serving_bench
from stream_ctr.bench.state import run_state_bench

__all__ = [
    "headline",
    "machine",
    "run_bench",
    "run_pipeline_bench",
    "run_quality_bench",
    "run_serving_bench",
    "run_state_bench",
]


def machine() -> dict:
    """Cores and CPU model of this machine, and the torch device used."""
    import os
    from pathlib import Path

    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown",
    )
    return {"cores": os.cpu_count(), "cpu_model": model}


def headline(inprocess: dict, serving: dict, state: dict, pipeline: dict) -> dict:
    """The keys of ``stream-ctr bench --json``, from the parts' own results (``state``: per store)."""
    store = "rocksdb" if "rocksdb" in state else next(iter(state))
    return {
        "machine": machine(),
        **pipeline,
        "lc_head_eps": inprocess["lc_head_eps"],
        "lc_head_eps_shuffled": inprocess.get("lc_head_eps_shuffled"),
        "trainer_sps": inprocess["trainer_sps"],
        "score_p50_ms": serving["score_p50_ms"],
        "score_p99_ms": serving["score_p99_ms"],
        "state_bytes_per_user": state[store]["state_bytes_per_user"],
        "recovery_s": state[store]["recovery_s"],
        "state_store": store,
    }
