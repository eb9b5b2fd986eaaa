"""The scoring API measured through HTTP on one real worker (broker, trainer and worker as processes): latency for
100 candidates, requests/s, and the ratio to the same ranking called in-process."""

from __future__ import annotations

import time

import numpy as np

from stream_ctr.bench.timing import timed, wait_applied
from stream_ctr.config import Settings
from stream_ctr.data import load_dataset
from stream_ctr.data.synthetic import FEATURES as SYNTHETIC_FEATURES
from stream_ctr.trainer.global_trainer import GlobalTrainer

__all__ = ["run_serving_bench"]


def run_serving_bench(settings: Settings, requests: int = 2000, candidates: int = 100) -> tuple[list[str], dict]:
    """Scoring latency through HTTP on one real worker (broker, trainer and worker as processes), against the
    same ranking called in-process on the same requests: the ratio is what HTTP, validation, routing and the
    exposure log cost."""
    import tempfile
    from pathlib import Path

    import orjson

    from stream_ctr import topics
    from stream_ctr.broker.replay import replay
    from stream_ctr.experiments.assignment import Experiment
    from stream_ctr.service.stack import Stack
    from stream_ctr.serving.client import ScoringClient
    from stream_ctr.serving.scoring import parse_score_request, rank

    events = load_dataset("synthetic")
    settings = settings.replace(features=SYNTHETIC_FEATURES)  # the stack moves to free ports if these are taken
    reqs = [_score_request(events, n, candidates) for n in range(requests)]
    with Stack(settings, Path(tempfile.mkdtemp(prefix="stream-ctr-bench-"))) as stack:
        replay(events[:5000], stack.settings, topics.events(stack.settings).name)
        wait_applied(stack, 5000)  # heads exist, the backlog is learned: the steady state is measured
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
    parsed = [parse_score_request(orjson.dumps(r)) for r in reqs]
    dt = timed(lambda: [rank(r, model, None, exp.assign(r.user_id), exp) for r in parsed])
    lat = np.array(latencies) * 1e3
    p50, p99 = np.percentile(lat, [50, 99])
    numbers = {"score_p50_ms": float(p50), "score_p99_ms": float(p99), "score_rps_4_clients": rps}
    return [
        "",
        f"## Scoring API ({candidates} candidates a request, one worker, HTTP on 127.0.0.1)",
        "",
        "| measured | value |",
        "|---|---|",
        f"| latency p50 / p99, one client | {p50:.2f} ms / {p99:.2f} ms |",
        f"| requests/s, one client (sequential) | {len(lat) / (lat.sum() / 1e3):,.0f} |",
        f"| requests/s, 4 concurrent clients | {rps:,.0f} |",
        f"| in-process ranking (no HTTP), same requests | {dt / len(parsed) * 1e3:.2f} ms a request |",
        f"| p50 through HTTP / in-process | {p50 / (dt / len(parsed) * 1e3):.1f}x |",
    ], numbers


def _score_request(events, n: int, candidates: int) -> dict:
    rng = np.random.default_rng(n)
    user = events[int(rng.integers(len(events)))].user_id
    items = rng.choice(400, size=candidates, replace=False)
    return {
        "user_id": user,
        "request_id": f"bench-{n}",
        "candidates": [
            {"item_id": f"i{i}", "features": {"category": f"c{i % 12}", "segment": f"s{i % 7}"}} for i in items
        ],
    }


def _concurrent_rps(url: str, reqs: list[dict], threads: int) -> float:
    import threading

    from stream_ctr.serving.client import ScoringClient

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
