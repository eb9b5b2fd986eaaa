"""``/v1/score`` under open-loop load: stepped constant arrival rates against one real worker, with the demo's
event stream flowing through the same worker at the same time (or not, ``stream_rate=0``).

Open loop: requests are sent at the stated rate whether or not earlier ones were answered, so queueing shows up in
the latencies instead of slowing the sender down (a closed-loop client hides it: coordinated omission). The
generator is `vegeta <https://github.com/tsenart/vegeta>`_ (Go, ``make vegeta`` installs it into the cache): a
Python sender on the same two cores would take the CPU it is meant to measure. Every request ranks 100 MovieLens
candidates with their ``genres`` for a user the worker has seen.

Per rate it reports p50 / p99 / p99.9 of every response, goodput (200s a second), the share answered 200, the
non-200s by status with how fast they came back, and timeouts. The capacity is the highest rate with p99 <= 25 ms
and at least 99% 200s.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import itertools
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import orjson

from stream_ctr.config import Settings
from stream_ctr.data import load_dataset

__all__ = [
    "DEFAULT_RATES",
    "capacity",
    "cpu_seconds",
    "find_vegeta",
    "request_staleness",
    "run_load_bench",
    "score_bodies",
    "summarize",
]

DEFAULT_RATES = (250, 500, 1000, 2000, 3000)
#: A rate is within capacity when its p99 is at most this and at least ``CAPACITY_SUCCESS`` of the answers are 200.
CAPACITY_P99_MS = 25.0
CAPACITY_SUCCESS = 0.99
#: The client gives up after this; a request still unanswered counts as a timeout.
CLIENT_TIMEOUT_S = 5
_WARMED_EVENTS = 5000


def find_vegeta() -> str:
    """Path of the vegeta binary: ``$STREAM_CTR_VEGETA``, the project cache (``make vegeta``) or ``$PATH``."""
    for candidate in (
        os.environ.get("STREAM_CTR_VEGETA"),
        Path.home() / ".cache/stream-ctr/bin/vegeta",
        shutil.which("vegeta"),
    ):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    raise FileNotFoundError(
        "the load bench needs vegeta: run `make vegeta` (go install into ~/.cache/stream-ctr/bin) "
        "or set STREAM_CTR_VEGETA to its path"
    )


def score_bodies(events, n: int, candidates: int = 100, seed: int = 0) -> list[bytes]:
    """``n`` request bodies: a user of ``events`` and ``candidates`` distinct items of the stream with their
    features, as a client of the service would send them."""
    rng = np.random.default_rng(seed)
    items: dict[str, dict] = {}
    for e in events:
        items.setdefault(e.item_id, dict(e.features))
    ids = sorted(items)
    users = sorted({e.user_id for e in events})
    bodies = []
    for k in range(n):
        chosen = rng.choice(len(ids), size=min(candidates, len(ids)), replace=False)
        bodies.append(
            orjson.dumps(
                {
                    "user_id": users[int(rng.integers(len(users)))],
                    "request_id": f"load-{seed}-{k}",
                    "candidates": [{"item_id": ids[i], "features": items[ids[i]]} for i in chosen],
                }
            )
        )
    return bodies


def _targets(url: str | list[str], bodies: list[bytes], path: Path) -> None:
    """Vegeta's targets: ``bodies`` posted to ``/v1/score`` of ``url`` (several: in turn, one body each)."""
    urls = [url] if isinstance(url, str) else url
    with path.open("wb") as f:
        for n, body in enumerate(bodies):
            f.write(
                orjson.dumps(
                    {
                        "method": "POST",
                        "url": f"{urls[n % len(urls)]}/v1/score",
                        "header": {"Content-Type": ["application/json"]},
                        "body": base64.b64encode(body).decode(),
                    }
                )
                + b"\n"
            )


def attack(vegeta: str, targets: Path, rate: int, seconds: float) -> list[tuple[int, float]]:
    """(status, latency ms) of every request of an open-loop attack; status 0 is a timeout or a refused
    connection."""
    cmd = [
        vegeta,
        "attack",
        "-format=json",
        f"-targets={targets}",
        f"-rate={rate}/s",
        f"-duration={seconds}s",
        f"-timeout={CLIENT_TIMEOUT_S}s",
        "-keepalive=true",
    ]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE) as att:
        enc = subprocess.run([vegeta, "encode", "-to=csv"], stdin=att.stdout, capture_output=True, check=True)
    out = []
    for row in csv.reader(enc.stdout.decode().splitlines()):
        out.append((int(row[1]), int(row[2]) / 1e6))
    return out


def summarize(rate: int, seconds: float, results: list[tuple[int, float]]) -> dict:
    """One rate's row: latency quantiles of every answer, goodput, the share of 200s, the non-200s."""
    codes = np.array([c for c, _ in results], dtype=np.int64)
    lat = np.array([ms for _, ms in results], dtype=np.float64)
    ok = codes == 200
    shed = np.isin(codes, (429, 503))
    p50, p99, p999 = np.percentile(lat, [50, 99, 99.9]) if len(lat) else (float("nan"),) * 3
    return {
        "rate": rate,
        "sent": int(len(codes)),
        "p50_ms": float(p50),
        "p99_ms": float(p99),
        "p999_ms": float(p999),
        "goodput": float(ok.sum() / seconds),
        "ok_share": float(ok.mean()) if len(ok) else 0.0,
        "shed": int(shed.sum()),
        "shed_p99_ms": float(np.percentile(lat[shed], 99)) if shed.any() else 0.0,
        "timeouts": int((codes == 0).sum()),
        "other": int((~ok & ~shed & (codes != 0)).sum()),
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process ``pid`` has used (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def request_staleness(urls: list[str]) -> tuple[float, int]:
    """``(sum, count)`` of the staleness (events of ``ctr.events`` the model had not learned) of every scoring
    request the processes at ``urls`` answered so far, from their ``/metrics``."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    total, count = 0.0, 0
    for url in urls:
        with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.labels.get("scored") == "request" and s.name.startswith("stream_ctr_model_staleness_samples_"):
                    total += s.value if s.name.endswith("_sum") else 0.0
                    count += int(s.value) if s.name.endswith("_count") else 0
    return total, count


def capacity(rows: list[dict]) -> int:
    """The highest rate whose p99 and share of 200s are within the targets (0 when none is)."""
    good = [r["rate"] for r in rows if r["p99_ms"] <= CAPACITY_P99_MS and r["ok_share"] >= CAPACITY_SUCCESS]
    return max(good, default=0)


def _stream(stack, events, rate: float, stop: threading.Event) -> None:
    """Replay ``events`` into the stack at ``rate`` until ``stop``: the demo's traffic beside the load. When they
    run out they are sent again as new events (fresh ids, later times), so the stream flows through every step."""
    from stream_ctr import topics
    from stream_ctr.broker.replay import replay

    span = events[-1].ts - events[0].ts + 1.0
    chunk = max(1, int(rate))  # one second of events a call, so a stop takes effect within a second
    for cycle in itertools.count():
        for start in range(0, len(events), chunk):
            if stop.is_set():
                return
            part = events[start : start + chunk]
            if cycle:
                part = [dataclasses.replace(e, event_id=f"{e.event_id}~{cycle}", ts=e.ts + cycle * span) for e in part]
            replay(part, stack.settings, topics.events(stack.settings).name, rate)


def run_load_bench(
    settings: Settings,
    rates=DEFAULT_RATES,
    seconds: float = 15.0,
    candidates: int = 100,
    stream_rates=(0.0, 3000.0),
    routed_rate: int = 200,
    scorers: int = 0,
) -> tuple[list[str], dict]:
    """Step through ``rates`` against a fresh stack's worker, once per rate of ``stream_rates``: MovieLens events/s
    flowing through the same worker meanwhile (0: none). The baseline, in the same run: ``GET /healthz`` of the
    same server at the highest rate (what HTTP alone costs here). With ``scorers`` > 0, that many scorer processes
    (``stream-ctr scorer``) start beside the worker and the same steps are sent to them instead, in turn. Last,
    with ``routed_rate`` > 0, a second worker joins and the first is asked, at that rate, for users it owns and
    then for users the second owns (each forwarded once): what the hop costs."""
    from stream_ctr import topics
    from stream_ctr.bench.timing import wait_applied
    from stream_ctr.broker.replay import replay
    from stream_ctr.service.stack import Stack

    vegeta = find_vegeta()
    events = load_dataset("ml-100k")
    warm, rest = events[:_WARMED_EVENTS], events[_WARMED_EVENTS:]
    bodies = score_bodies(warm, 20_000, candidates)
    lines, numbers = [], {}
    with Stack(settings, Path(tempfile.mkdtemp(prefix="stream-ctr-load-"))) as stack:
        replay(warm, stack.settings, topics.events(stack.settings).name)
        wait_applied(stack, len(warm))  # heads exist for the users asked about
        folder = Path(tempfile.mkdtemp(prefix="stream-ctr-targets-"))
        _targets(stack.worker_url, bodies, folder / "score.jsonl")
        health = {"method": "GET", "url": f"{stack.worker_url}/healthz"}
        (folder / "health.jsonl").write_bytes(orjson.dumps(health) + b"\n")
        attack(vegeta, folder / "score.jsonl", 200, 3)  # warm-up: connections, code paths
        floor = summarize(max(rates), seconds, attack(vegeta, folder / "health.jsonl", max(rates), seconds))
        for stream_rate in stream_rates:
            rows = _steps(stack, vegeta, folder / "score.jsonl", rates, seconds, rest, stream_rate, ["worker"])
            lines += render(rows, candidates, stream_rate, seconds)
            numbers[f"stream_{stream_rate:.0f}"] = {"rows": rows, "capacity_rps": capacity(rows)}
        if scorers > 0:
            lines += _scorer_steps(stack, vegeta, bodies, folder, rates, seconds, rest, stream_rates, scorers, numbers)
        if routed_rate > 0:
            numbers["routed"] = _routed(stack, vegeta, bodies, folder, routed_rate, seconds)
            lines += render_routed(numbers["routed"])
    lines += [
        "",
        f"Baseline, same server and run: `GET /healthz` at {floor['rate']:,}/s: "
        f"p50 {floor['p50_ms']:.1f} ms, "
        f"p99 {floor['p99_ms']:.1f} ms, {floor['ok_share']:.1%} 200s (the cost of HTTP alone).",
    ]
    numbers["healthz"] = floor
    return lines, numbers


def _steps(
    stack, vegeta: str, targets: Path, rates, seconds: float, events, stream_rate: float, serving: list[str]
) -> list[dict]:
    """One row per rate; ``worker_cores``: the CPU the ``serving`` processes (by stack name) used meanwhile."""
    stop = threading.Event()
    feeder = threading.Thread(target=_stream, args=(stack, events, stream_rate, stop), daemon=True)
    if stream_rate > 0:
        feeder.start()
    rows = []
    pids = [stack.procs[name].pid for name in serving]
    urls = [stack.url(name) for name in serving]
    try:
        for rate in rates:
            cpu0, t0, stale0 = sum(map(cpu_seconds, pids)), time.monotonic(), request_staleness(urls)
            row = summarize(rate, seconds, attack(vegeta, targets, rate, seconds))
            row["worker_cores"] = (sum(map(cpu_seconds, pids)) - cpu0) / (time.monotonic() - t0)
            (total, n), (total0, n0) = request_staleness(urls), stale0
            row["staleness_mean"] = (total - total0) / (n - n0) if n > n0 else float("nan")
            rows.append(row)
            time.sleep(1.0)  # let a backlog of the previous rate drain
    finally:
        stop.set()
        if feeder.is_alive():
            feeder.join(timeout=10)
    return rows


def _scorer_steps(stack, vegeta, bodies, folder: Path, rates, seconds, events, stream_rates, scorers, numbers) -> list:
    """Start ``scorers`` scorer processes beside the worker and step through ``rates`` against them, in turn."""
    names = [f"scorer{n + 1}" for n in range(scorers)]
    for name in names:  # started here, not by the stack: the worker's passes run without them
        stack.spawn("scorer", name)
    for name in names:
        stack.wait_healthy(120, name)
    _targets([stack.url(name) for name in names], bodies, folder / "scorers.jsonl")
    attack(vegeta, folder / "scorers.jsonl", 200, 3)  # warm-up
    lines = []
    for stream_rate in stream_rates:
        rows = _steps(stack, vegeta, folder / "scorers.jsonl", rates, seconds, events, stream_rate, names)
        lines += render(rows, candidates=len(orjson.loads(bodies[0])["candidates"]), stream_rate=stream_rate,
                        seconds=seconds, scorers=scorers)  # fmt: skip
        numbers[f"scorers_{scorers}_stream_{stream_rate:.0f}"] = {"rows": rows, "capacity_rps": capacity(rows)}
    return lines


def _routed(stack, vegeta: str, bodies: list[bytes], folder: Path, rate: int, seconds: float) -> dict:
    from stream_ctr.contracts.events import partition_of

    stack.spawn("worker", "worker2")
    stack.wait_healthy(120, "worker2")
    mine = _settled_partitions(stack, stack.settings.events_partitions)
    n = stack.settings.events_partitions
    local: list[bytes] = []
    forwarded: list[bytes] = []
    for body in bodies:
        user = orjson.loads(body)["user_id"]
        (local if partition_of(user.encode(), n) in mine else forwarded).append(body)
    out = {}
    for name, part in (("local", local), ("forwarded", forwarded)):
        _targets(stack.worker_url, part, folder / f"{name}.jsonl")
        attack(vegeta, folder / f"{name}.jsonl", rate, 2)  # warm-up: the new connections between the workers
        out[name] = summarize(rate, seconds, attack(vegeta, folder / f"{name}.jsonl", rate, seconds))
    return out


def _settled_partitions(stack, partitions: int, timeout: float = 90.0) -> set[int]:
    """The first worker's partitions once the two workers' reports split them all between them."""
    from stream_ctr.service.stack import get_json

    deadline = time.monotonic() + timeout
    while True:
        owned = [
            set(map(int, get_json(f"{url}/v1/stats")[1].get("partitions", {})))
            for url in (stack.worker_url, stack.url("worker2"))
        ]
        if owned[0] and owned[1] and not owned[0] & owned[1] and len(owned[0] | owned[1]) == partitions:
            return owned[0]
        if time.monotonic() > deadline:
            raise TimeoutError(f"the two workers did not split {partitions} partitions in {timeout:.0f}s: {owned}")
        time.sleep(1.0)


def render_routed(routed: dict) -> list[str]:
    local, fwd = routed["local"], routed["forwarded"]
    return [
        "",
        f"## Routed requests: two workers, the first asked at {local['rate']:,}/s",
        "",
        "| users of | p50 ms | p99 ms | 200 share |",
        "|---|---|---|---|",
        *(
            f"| {name} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['ok_share']:.1%} |"
            for name, r in (("the first worker (served there)", local), ("the second worker (forwarded once)", fwd))
        ),
        "",
        f"Forwarded / local: p50 {fwd['p50_ms'] / local['p50_ms']:.1f}x, p99 {fwd['p99_ms'] / local['p99_ms']:.1f}x.",
    ]


def render(rows: list[dict], candidates: int, stream_rate: float, seconds: float, scorers: int = 0) -> list[str]:
    """The table of one pass: served by the worker, or (``scorers`` > 0) by that many scorers beside it."""
    flowing = f"MovieLens events flowing at {stream_rate:,.0f}/s" if stream_rate > 0 else "no events flowing"
    who = f"{scorers} scorer process{'es' if scorers > 1 else ''} beside one worker" if scorers else "one worker"
    server = "scorers'" if scorers else "worker"
    lines = [
        "",
        f"## Scoring under open-loop load (vegeta, {candidates} candidates a request, {seconds:.0f} s a rate, "
        f"served by {who}, {flowing}, {os.cpu_count()} cores)",
        "",
        "| requests/s offered | p50 ms | p99 ms | p99.9 ms | 200s/s | 200 share | shed (429/503), p99 ms | "
        f"timeouts | other | {server} CPU (cores) | 200s/s per serving core | model staleness, mean events |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        per_core = r["goodput"] / r["worker_cores"] if r["worker_cores"] > 0 else float("nan")
        lines.append(
            f"| {r['rate']:,} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['p999_ms']:.1f} | "
            f"{r['goodput']:,.0f} | {r['ok_share']:.1%} | {r['shed']:,}, {r['shed_p99_ms']:.1f} | "
            f"{r['timeouts']:,} | {r['other']:,} | {r['worker_cores']:.2f} | {per_core:,.0f} | "
            f"{r.get('staleness_mean', float('nan')):,.0f} |"
        )
    lines += [
        "",
        f"Capacity (highest rate with p99 <= {CAPACITY_P99_MS:.0f} ms and >= {CAPACITY_SUCCESS:.0%} 200s): "
        f"{capacity(rows):,} requests/s. Model staleness: the events of `ctr.events` the model that answered a "
        "request had not learned, up to the end of the topic, averaged over the step's requests.",
    ]
    return lines
