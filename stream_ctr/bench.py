"""``stream-ctr bench``: the hot paths measured in-process on MovieLens-100K, printed as numbers and ratios.

- global trainer: samples/s of mini-batch training (per model family);
- test-then-train: events/s through :func:`~stream_ctr.learning.test_then_train` at several batch sizes, and the
  share of that time spent in the global model's forward pass;
- per-user state: bytes per user in the binary codec against the same state as JSON;
- snapshots: bytes and encode + decode time.

With ``--serving``: the scoring API's latency for 100 candidates through HTTP on one real worker, and requests/s.
The Kafka path end to end is measured by ``stream-ctr demo`` (its report states events/s).
"""

from __future__ import annotations

import time

import numpy as np
import orjson

from .config import Settings
from .data import load_dataset
from .learning import HeadParams, test_then_train
from .snapshot import Snapshot
from .trainer import GlobalTrainer

__all__ = ["run_bench", "run_serving_bench"]


def _timed(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def run_bench(settings: Settings, families: list[str], limit: int) -> list[str]:
    events = load_dataset("ml-100k", limit)
    half = len(events) // 2
    train, stream = events[:half], events[half:]
    lines = [f"# stream-ctr bench: {len(events)} MovieLens-100K events, torch on {settings.device}", ""]

    lines += ["## Global trainer (one pass, batch %d)" % settings.trainer_batch, "", "| family | samples/s |",
              "|---|---|"]
    trainers = {}
    for family in families:
        trainer = GlobalTrainer(settings.replace(model_family=family))
        dt = _timed(lambda: trainer.learn_many(train))
        trainers[family] = trainer
        lines.append(f"| {family} | {len(train) / dt:,.0f} |")

    model = trainers[families[0]].snapshot().build()
    params = HeadParams.from_settings(settings)
    lines += ["", f"## Test-then-train ({families[0]}, 3 arms, {len(stream)} events)", "",
              "| batch | events/s | forward share |", "|---|---|---|"]
    rates = {}
    for batch in (16, 64, 256, 1024):
        states: dict = {}
        def run():
            for lo in range(0, len(stream), batch):
                test_then_train([(e, lo + i) for i, e in enumerate(stream[lo: lo + batch])], model, states, params)
        dt = _timed(run)
        fwd = _timed(lambda: [model.forward(stream[lo: lo + batch]) for lo in range(0, len(stream), batch)])
        rates[batch] = len(stream) / dt
        lines.append(f"| {batch} | {rates[batch]:,.0f} | {fwd / dt:.0%} |")
    lines.append(f"\nBatch 256 vs batch 16: {rates[256] / rates[16]:.1f}x events/s.")

    sizes = [len(s.to_bytes()) for s in states.values()]
    as_json = [len(orjson.dumps({**s.summary(), "heads": {a: [h.b, h.w.tolist()] for a, h in s.heads.items()},
                                 "window": s.ctr.window_labels})) for s in states.values()]
    lines += ["", "## Per-user state", "",
              f"{len(sizes)} users: binary codec {np.mean(sizes):.0f} bytes/user (max {max(sizes)}), "
              f"JSON of the same state {np.mean(as_json):.0f} bytes/user: {np.mean(as_json) / np.mean(sizes):.1f}x "
              "smaller."]

    snap = trainers[families[0]].snapshot()
    data = snap.to_bytes()
    dt = _timed(lambda: Snapshot.from_bytes(snap.to_bytes()).build(), repeat=3)
    lines += ["", "## Snapshot", "", f"{families[0]}: {len(data) / 1e6:.2f} MB, encode + decode + build {dt * 1e3:.0f} ms."]
    return lines


def run_serving_bench(settings: Settings, requests: int = 2000, candidates: int = 100) -> list[str]:
    """Scoring latency through HTTP on one real worker (broker, trainer and worker as processes), against the
    same ranking called in-process on the same requests: the ratio is what HTTP, validation, routing and the
    exposure log cost."""
    import tempfile
    from pathlib import Path

    from . import topics
    from .ab.assignment import Experiment
    from .client import ScoringClient
    from .net import free_port_pair
    from .replay import replay
    from .serving import ScoreRequest, rank
    from .stack import Stack

    events = load_dataset("synthetic")
    settings = settings.replace(features="category,segment", web_port=free_port_pair(settings.web_bind))
    reqs = [_score_request(events, n, candidates) for n in range(requests)]
    with Stack(settings, Path(tempfile.mkdtemp(prefix="stream-ctr-bench-"))) as stack:
        replay(events[:5000], stack.settings.kafka_bootstrap, topics.events(stack.settings).name)
        _wait_applied(stack, 5000)  # heads exist, the backlog is learned: the steady state is measured
        client = ScoringClient(stack.worker_url)
        for req in reqs[:200]:  # warm-up: connection, first snapshot, code paths
            client.score(req)
        latencies = []
        for req in reqs:
            t0 = time.perf_counter()
            client.score(req)
            latencies.append(time.perf_counter() - t0)
        rps = _concurrent_rps(stack.worker_url, reqs, threads=4)
    model = GlobalTrainer(settings).snapshot().build()
    exp = Experiment.default()
    parsed = [ScoreRequest.model_validate(r) for r in reqs]
    dt = _timed(lambda: [rank(r, model, None, exp.assign(r.user_id), exp) for r in parsed])
    lat = np.array(latencies) * 1e3
    p50, p99 = np.percentile(lat, [50, 99])
    return ["", f"## Scoring API ({candidates} candidates a request, one worker, HTTP on 127.0.0.1)", "",
            "| measured | value |", "|---|---|",
            f"| latency p50 / p99, one client | {p50:.2f} ms / {p99:.2f} ms |",
            f"| requests/s, one client (sequential) | {len(lat) / (lat.sum() / 1e3):,.0f} |",
            f"| requests/s, 4 concurrent clients | {rps:,.0f} |",
            f"| in-process ranking (no HTTP), same requests | {dt / len(parsed) * 1e3:.2f} ms a request |",
            f"| p50 through HTTP / in-process | {p50 / (dt / len(parsed) * 1e3):.1f}x |"]


def _wait_applied(stack, n: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while stack.stats()["applied"] < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the worker did not apply {n} events in {timeout:.0f}s")
        time.sleep(0.2)


def _score_request(events, n: int, candidates: int) -> dict:
    rng = np.random.default_rng(n)
    user = events[int(rng.integers(len(events)))].user_id
    items = rng.choice(400, size=candidates, replace=False)
    return {"user_id": user, "request_id": f"bench-{n}", "candidates": [
        {"item_id": f"i{i}", "features": {"category": f"c{i % 12}", "segment": f"s{i % 7}"}} for i in items]}


def _concurrent_rps(url: str, reqs: list[dict], threads: int) -> float:
    import threading

    from .client import ScoringClient

    def work(part):
        client = ScoringClient(url)
        for req in part:
            client.score(req)
        client.close()

    pool = [threading.Thread(target=work, args=(reqs[i::threads],)) for i in range(threads)]
    t0 = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return len(reqs) / (time.perf_counter() - t0)
