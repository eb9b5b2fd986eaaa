"""The hot paths measured in-process on MovieLens-100K, printed as numbers and ratios.

- global trainer: samples/s of mini-batch training (per model family);
- test-then-train: events/s through :func:`~stream_ctr.learning.loop.test_then_train` at several batch sizes, and the
  share of that time spent in the global model's forward pass;
- per-user state: bytes per user in the binary codec against the same state as JSON;
- snapshots and deltas: bytes and encode + decode (+ build or apply) time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial

import numpy as np
import orjson

from stream_ctr.bench.timing import timed
from stream_ctr.config import Settings
from stream_ctr.data import load_dataset
from stream_ctr.learning.loop import HeadParams, test_then_train
from stream_ctr.models.delta import Delta
from stream_ctr.models.snapshot import Snapshot
from stream_ctr.trainer.global_trainer import GlobalTrainer

__all__ = ["run_bench"]


def run_bench(settings: Settings, families: list[str], limit: int) -> tuple[list[str], dict]:
    """Markdown lines and ``{trainer_sps: {family: samples/s}, test_then_train_eps: {batch: events/s},
    state_bytes_per_user_inprocess}``."""
    events = load_dataset("ml-100k", limit)
    half = len(events) // 2
    train, stream = events[:half], events[half:]
    lines = [f"# stream-ctr bench: {len(events)} MovieLens-100K events, torch on {settings.device}", ""]
    trainer_lines, trainers, sps = _trainer_section(settings, families, train)
    lines += trainer_lines
    first = trainers[families[0]]
    ttt = _test_then_train_section(stream, first.snapshot().build(), HeadParams.from_settings(settings), families[0])
    lines += ttt.lines
    state_lines, sizes = _state_section(ttt.states)
    lines += state_lines
    lines += _snapshot_lines(first, families[0])
    lines += _delta_lines(first, stream, settings.delta_every)
    refresh = _refresh_seconds()
    lines += _refresh_lines(refresh)
    numbers = {
        "refresh_s": {str(u): t for u, (t, _) in refresh.items()},
        "trainer_sps": sps,
        "test_then_train_eps": {str(b): r for b, r in ttt.rates.items()},
        "lc_head_eps": max(ttt.heads.values()),
        "lc_head_eps_shuffled": ttt.shuffled_heads,
        "state_bytes_per_user_inprocess": float(np.mean(sizes)),
    }
    return lines, numbers


def _trainer_section(
    settings: Settings, families: list[str], train
) -> tuple[list[str], dict[str, GlobalTrainer], dict[str, float]]:
    """One pass of mini-batch training per family: the table's lines, the trained trainers and their samples/s."""
    lines = [
        f"## Global trainer (one pass, batch {settings.trainer_batch})",
        "",
        "| family | samples/s |",
        "|---|---|",
    ]
    trainers, sps = {}, {}
    for family in families:
        trainer = GlobalTrainer(settings.replace(model_family=family))
        dt = timed(partial(trainer.learn_many, train))
        trainers[family], sps[family] = trainer, len(train) / dt
        lines.append(f"| {family} | {sps[family]:,.0f} |")
    return lines, trainers, sps


@dataclass
class _TestThenTrain:
    """What the test-then-train section measured: its lines, events/s and head-only events/s per batch size,
    head-only events/s on the shuffled stream, and the users' states after the last time-ordered run."""

    lines: list[str]
    rates: dict[int, float]
    heads: dict[int, float]
    shuffled_heads: float
    states: dict


def _test_then_train_section(stream, model, params: HeadParams, family: str) -> _TestThenTrain:
    """Events/s through test-then-train at several batch sizes in time order, and at 1024 shuffled."""
    lines = [
        "",
        f"## Test-then-train ({family}, 3 arms, {len(stream)} events)",
        "",
        "| batch | events/s | forward share |",
        "|---|---|---|",
    ]
    rates, heads = {}, {}
    for batch in (16, 64, 256, 1024):
        rates[batch], heads[batch], share, states = _test_then_train_rates(stream, batch, model, params)
        lines.append(f"| {batch} | {rates[batch]:,.0f} | {share:.0%} |")
    # A real app's batch holds many users, MovieLens' time order few (a user rates in sessions): the same events
    # shuffled put hundreds of users in each batch, so the per-user gather and scatter show.
    shuffled = [stream[i] for i in np.random.default_rng(0).permutation(len(stream))]
    many_rate, many_heads, share, _ = _test_then_train_rates(shuffled, 1024, model, params)
    per_batch = np.mean([len({e.user_id for e in shuffled[lo : lo + 1024]}) for lo in range(0, len(shuffled), 1024)])
    lines.append(f"| 1024, shuffled ({per_batch:.0f} users a batch) | {many_rate:,.0f} | {share:.0%} |")
    lines.append(
        f"\nBatch 256 vs batch 16: {rates[256] / rates[16]:.1f}x events/s. Without the forward pass (rolling "
        f"CTR, label correction and the head steps of 3 arms, all heads of a batch at once): "
        f"{max(heads.values()):,.0f} events/s in time order, {many_heads:,.0f} events/s shuffled."
    )
    return _TestThenTrain(lines, rates, heads, many_heads, states)


def _state_section(states: dict) -> tuple[list[str], list[int]]:
    """Bytes per user of the binary state codec against JSON of the same state: the lines and the binary sizes."""
    sizes = [len(s.to_bytes()) for s in states.values()]
    as_json = [
        len(
            orjson.dumps(
                {
                    **s.summary(),
                    "heads": {a: [h.b, h.w.tolist()] for a, h in s.heads.items()},
                    "window": s.ctr.window_labels,
                }
            )
        )
        for s in states.values()
    ]
    lines = [
        "",
        "## Per-user state",
        "",
        f"{len(sizes)} users: binary codec {np.mean(sizes):.0f} bytes/user (max {max(sizes)}), "
        f"JSON of the same state {np.mean(as_json):.0f} bytes/user: {np.mean(as_json) / np.mean(sizes):.1f}x "
        "smaller.",
    ]
    return lines, sizes


def _snapshot_lines(trainer: GlobalTrainer, family: str) -> list[str]:
    """Bytes of the trainer's full snapshot and its encode + decode + build time."""
    snap = trainer.snapshot()
    data = snap.to_bytes()
    dt = timed(lambda: Snapshot.from_bytes(snap.to_bytes()).build(), repeat=3)
    return [
        "",
        "## Snapshot and delta",
        "",
        f"{family} full snapshot: {len(data) / 1e6:.2f} MB, encode + decode + build {dt * 1e3:.0f} ms.",
    ]


def _refresh_lines(refresh: dict[int, tuple[float, float]]) -> list[str]:
    """The table of :func:`_refresh_seconds`."""
    return [
        "",
        "## Online metrics refresh (window 20,000 rows + lifetime, 3 arms, 4 predictions a user)",
        "",
        "| users | lifetime rows | refresh | with paired CIs (a report) |",
        "|---|---|---|---|",
    ] + [
        f"| {u:,} | {4 * u:,} | {t:.2f} s | "
        + ("not run (a 500 x users matrix)" if np.isnan(tp) else f"{tp:.2f} s")
        + " |"
        for u, (t, tp) in refresh.items()
    ]


def _test_then_train_rates(stream, batch: int, model, params) -> tuple[float, float, float, dict]:
    """Events/s through test-then-train in batches of ``batch``; events/s of what is left without the global
    forward pass; the forward pass's share of the time; and the users' states afterwards."""
    batches = [[(e, lo + i) for i, e in enumerate(stream[lo : lo + batch])] for lo in range(0, len(stream), batch)]
    states: dict = {}

    def run():
        states.clear()
        for records in batches:
            test_then_train(records, model, states, params)

    dt = timed(run, repeat=2)
    fwd = timed(lambda: [model.forward([e for e, _ in records]) for records in batches], repeat=2)
    return len(stream) / dt, len(stream) / max(dt - fwd, 1e-9), fwd / dt, states


def _refresh_seconds(users=(1_000, 100_000, 1_000_000)) -> dict[int, tuple[float, float]]:
    """Seconds of one metrics refresh (as the worker's timer runs it), and of one with the paired bootstrap, with
    4 predictions for each of ``users`` users in the lifetime scope."""
    from stream_ctr.contracts.arms import ARMS
    from stream_ctr.monitoring.prometheus import WorkerMetrics

    rng = np.random.default_rng(0)
    out = {}
    for n in users:
        metrics = WorkerMetrics(ARMS, window=20_000)
        ids = np.repeat(np.arange(n), 4).astype(str)
        labels = (rng.random(len(ids)) < 0.3).astype(np.float32)
        metrics.online.record(ids, labels, {arm: rng.random(len(ids)).astype(np.float32) for arm in ARMS})
        out[n] = (
            timed(metrics.refresh),
            timed(partial(metrics.refresh, paired=True)) if n <= 100_000 else float("nan"),
        )
    return out


def _delta_lines(trainer: GlobalTrainer, stream, every: int) -> list[str]:
    """Bytes and encode + decode + apply time of the deltas of ``every`` samples each, over 200 of them."""
    trainer.next_delta()  # what the one-pass training touched goes out first, and is not measured
    model = trainer.snapshot().build()
    sizes, spent = [], 0.0
    for lo in range(0, 200 * every, every):
        trainer.learn_many(stream[lo : lo + every])
        delta = trainer.next_delta()
        t0 = time.perf_counter()
        data = delta.to_bytes()
        model = model.advanced(Delta.from_bytes(data))
        spent += time.perf_counter() - t0
        sizes.append(len(data))
    return [
        f"Delta of {every} samples (the default cadence), mean over {len(sizes)}: {np.mean(sizes):,.0f} bytes "
        f"(max {max(sizes):,}, dense layers every {trainer.settings.dense_every}), encode + decode + apply "
        f"{spent / len(sizes) * 1e6:.0f} µs."
    ]
