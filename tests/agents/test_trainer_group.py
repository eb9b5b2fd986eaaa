"""The global trainer as a group of ranks (torch.distributed, gloo) on the real broker: every sample trained
exactly once, as well as by one rank, and a rank killed with SIGKILL costs nothing but a restart of the group
from the newest full snapshot."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from stream_ctr import topics
from stream_ctr.agents.snapshots import read_latest_snapshot
from stream_ctr.bench.state import publish_v0
from stream_ctr.broker.read import end_offsets
from stream_ctr.broker.replay import replay
from stream_ctr.learning.heads import sigmoid
from stream_ctr.quality.metrics import auc
from stream_ctr.service.stack import Stack, get_json

pytestmark = pytest.mark.broker


def _samples(stack: Stack, name: str) -> int:
    return get_json(f"{stack.url(name)}/healthz", timeout=10)[1].get("samples", 0)


def _final_snapshot(settings, samples: int, newer_than: int, timeout: float = 180.0):
    """The full snapshot on ``ctr.model`` once it holds ``samples`` (a trainer publishes one when the stream goes
    quiet)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        snap = asyncio.run(read_latest_snapshot(settings.kafka_bootstrap, topics.model(settings).name))
        if snap is not None and snap.version > newer_than and snap.samples >= samples:
            return snap
        time.sleep(0.5)
    raise AssertionError(f"no full snapshot with {samples} samples after {timeout:.0f} s (newest: {snap})")


def _ranks(agent: int) -> dict[int, int]:
    """Rank -> pid of the ranks the elastic agent ``agent`` runs."""
    pids = [
        int(c)
        for task in os.listdir(f"/proc/{agent}/task")
        for c in Path(f"/proc/{agent}/task/{task}/children").read_text().split()
    ]
    ranks = {}
    for pid in pids:
        env = dict(kv.split("=", 1) for kv in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in kv)
        if "RANK" in env:
            ranks[int(env["RANK"])] = pid
    return ranks


def test_two_ranks_train_every_sample_once_and_as_well_as_one(settings_factory, make_events, tmp_path):
    # One mini-batch size whatever the backlog: the ranks then differ from one trainer only in which events share a
    # step (a trainer with a backlog takes bigger steps, and how big depends on how fast it runs).
    settings = settings_factory(delta_every=64, full_snapshot_every=20, trainer_batch=32, trainer_batch_max=32)
    events = make_events(users=200, events_per_user=100, seed=5).events
    train, held_out = events[:16_000], events[16_000:]
    y = np.array([e.label for e in held_out])
    quality = {}
    with Stack(settings, tmp_path / "logs", trainer=False, worker=False) as stack:
        s = stack.settings
        replay(train, s.kafka_bootstrap, topics.events(s).name)
        ends = end_offsets(s.kafka_bootstrap, topics.events(s).name)
        for ranks in (1, 2):
            start = 10**9 * ranks
            publish_v0(s, version=start)  # both learn the same stream from the same untrained weights
            name = f"trainer-{ranks}"
            stack.spawn("trainer", name, trainer_world_size=ranks)
            stack.wait_healthy(180, name)
            snap = _final_snapshot(s, len(train), newer_than=start)
            assert snap.samples == len(train)  # every sample once: none skipped, none twice
            assert snap.offsets == ends  # rank 0 wrote where every rank's partitions stand
            g, _ = snap.build().forward(held_out)
            quality[ranks] = auc(y, sigmoid(g))
            stack.procs.pop(name).terminate()
    assert quality[1] > 0.6, quality  # the stream has signal, and one rank learns it
    assert abs(quality[2] - quality[1]) < 0.01, quality


def test_a_rank_killed_restarts_the_group_from_the_newest_full_snapshot(settings_factory, make_events, tmp_path):
    # Small steps and a full snapshot every 5 deltas: the kill lands mid-stream, with a snapshot to resume from.
    settings = settings_factory(delta_every=64, full_snapshot_every=5, trainer_batch_max=16, trainer_world_size=2)
    events = make_events(users=200, events_per_user=150, seed=6).events
    with Stack(settings, tmp_path / "logs", worker=False) as stack:
        s = stack.settings
        first = _ranks(stack.procs["trainer"].pid)
        assert sorted(first) == [0, 1]
        replay(events, s.kafka_bootstrap, topics.events(s).name)
        deadline = time.monotonic() + 120
        while _samples(stack, "trainer") < len(events) // 4:
            assert time.monotonic() < deadline, "the group did not start learning"
            time.sleep(0.05)
        assert _samples(stack, "trainer") < len(events), "learned everything before the kill: too fast to test"
        os.kill(first[1], signal.SIGKILL)

        snap = _final_snapshot(s, len(events), newer_than=0)
        assert stack.procs["trainer"].poll() is None  # the agent lives on
        again = _ranks(stack.procs["trainer"].pid)
        assert sorted(again) == [0, 1] and again[1] != first[1] and again[0] != first[0]  # a new group
        assert snap.samples == len(events)  # resumed at the snapshot's offsets: nothing skipped, nothing twice
        assert snap.offsets == end_offsets(s.kafka_bootstrap, topics.events(s).name)
