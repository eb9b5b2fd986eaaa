"""Per-user state at scale, through a real worker: ``users`` distinct synthetic users, one event each, replayed to
``ctr.events`` and applied by one worker process (durable state: the users table and its changelog).

Measured per table store (``memory`` and ``rocksdb``):

- state bytes per user: the changelog's encoded state (:meth:`~stream_ctr.learning.state.UserState.to_bytes`), and for
  RocksDB the files on disk;
- the worker's resident memory (``VmRSS``) before and after, and the growth per user;
- recovery: the worker is killed (SIGKILL) and restarted on the same data dir; the time from the restart until
  it applies an event produced after it, i.e. until it consumes again with every user's state back.

The global model is a fixed v0 snapshot published by the benchmark itself (no trainer process), so the worker is
the only process measured.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from stream_ctr import topics
from stream_ctr.bench.timing import wait_applied
from stream_ctr.broker.replay import producer, replay
from stream_ctr.config import Settings
from stream_ctr.contracts.events import Event
from stream_ctr.data.synthetic import FEATURES as SYNTHETIC_FEATURES
from stream_ctr.service.stack import Stack
from stream_ctr.trainer.global_trainer import GlobalTrainer

__all__ = ["publish_v0", "run_state_bench"]


def run_state_bench(settings: Settings, users: int, stores=("memory", "rocksdb")) -> tuple[list[str], dict]:
    """The markdown lines and ``{store: figures}`` for ``users`` distinct users per store."""
    results = {store: _measure(settings, users, store) for store in stores}
    lines = [
        "",
        f"## Per-user state at scale ({users:,} users, one event each, one worker process)",
        "",
        "| store | events/s | state bytes/user (encoded) | disk bytes/user | RSS before → after | "
        "RSS growth/user | recovery after kill -9 |",
        "|---|---|---|---|---|---|---|",
    ]
    for store, r in results.items():
        disk = f"{r['disk_bytes_per_user']:.0f}" if r["disk_bytes_per_user"] else "–"
        lines.append(
            f"| {store} | {r['eps']:,.0f} | {r['state_bytes_per_user']:.0f} | {disk} | "
            f"{r['rss_before'] / 2**20:,.0f} → {r['rss_after'] / 2**20:,.0f} MiB | "
            f"{r['rss_bytes_per_user']:.0f} B | {r['recovery_s']:.1f} s |"
        )
    return lines, results


def _events(users: int, offset: int = 0, seed: int = 0):
    rng = np.random.default_rng(seed)
    for i in range(offset, offset + users):
        yield Event(
            f"e{i}",
            f"user-{i:08d}",
            f"i{i % 400}",
            float(i),
            int(rng.random() < 0.1),
            {"category": f"c{i % 12}", "segment": f"s{i % 7}"},
        )


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def publish_v0(settings: Settings, version: int = 0) -> None:
    """Put an untrained snapshot (at ``version``, offsets at the start) on ``ctr.model``: a worker measured without
    a trainer is healthy once it has it, and a trainer that starts resumes from it when it is the newest."""
    trainer = GlobalTrainer(settings)
    trainer.version = version
    prod = producer(settings)
    try:
        prod.send(topics.model(settings).name, key=b"global", value=trainer.snapshot().to_bytes())
        prod.flush()
    finally:
        prod.close()


def _measure(settings: Settings, users: int, store: str) -> dict:
    tag = f"bench-state-{store}-{time.time_ns() % 10**9}"
    settings = settings.replace(
        store=store, features=SYNTHETIC_FEATURES, topic_prefix=f"{tag}.", app_id=tag, batch_size=1024
    )
    logs = Path(tempfile.mkdtemp(prefix="stream-ctr-bench-state-"))
    with Stack(settings, logs, trainer=False, worker=False) as stack:
        s = stack.settings
        publish_v0(s)  # before the worker starts: it is healthy once it has a model
        stack.spawn("worker")
        stack.wait_healthy(120)
        rss_before = _rss(stack.procs["worker"].pid)
        t0 = time.monotonic()
        replay(_events(users), s, topics.events(s).name)
        wait_applied(stack, users, timeout=users / 200 + 300)
        eps = users / (time.monotonic() - t0)
        rss_after = _rss(stack.procs["worker"].pid)
        disk = sum(f.stat().st_size for f in (logs / "worker.data").rglob("*") if f.is_file())
        state_bytes = _changelog_bytes(s, users) / users
        recovery = _recovery_seconds(stack, users)
    return {
        "eps": eps,
        "state_bytes_per_user": state_bytes,
        "rss_before": rss_before,
        "rss_after": rss_after,
        "rss_bytes_per_user": (rss_after - rss_before) / users,
        "recovery_s": recovery,
        "disk_bytes_per_user": disk / users if store == "rocksdb" else 0.0,
    }


def _changelog_bytes(settings: Settings, users: int, timeout: float = 60.0) -> int:
    """Bytes of the newest changelog record of each user, once the changelog holds one for all ``users``: a batch
    is counted as applied before its changelog writes are flushed, so reading at once can miss the last ones."""
    from stream_ctr.broker.read import read_topic

    deadline, changelog = time.monotonic() + timeout, f"{settings.app_id}-personalize-users-changelog"
    while True:
        newest = {m.key: len(m.value or b"") for m in read_topic(settings, changelog)}
        if len(newest) >= users or time.monotonic() > deadline:
            return sum(newest.values())
        time.sleep(0.5)


def _recovery_seconds(stack: Stack, users: int) -> float:
    """Kill the worker, restart it on its data dir, and feed it fresh users until it applies one."""
    stack.kill("worker")
    started = time.monotonic()
    stack.spawn("worker")
    stop = threading.Event()

    def feed():
        offset = users
        while not stop.is_set():
            replay(_events(8, offset, seed=1), stack.settings, topics.events(stack.settings).name)
            offset += 8
            stop.wait(0.1)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        while True:
            try:
                if stack.stats().get("applied", 0) > 0:
                    return time.monotonic() - started
            except OSError:
                pass  # not listening yet
            if time.monotonic() - started > 600:
                raise TimeoutError("the restarted worker applied nothing in 600 s")
            time.sleep(0.1)
    finally:
        stop.set()
        feeder.join()
