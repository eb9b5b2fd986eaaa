"""The data-parallel trainer without Kafka: two ranks started by the real launcher (torch's elastic agent, gloo)
learn as one trainer does with the group's mini-batch, and agree on the stream position."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from stream_ctr.config import Settings
from stream_ctr.trainer.distributed import Group, launch
from stream_ctr.trainer.global_trainer import GlobalTrainer
from tests.conftest import OFFLINE

PARTITIONS = 4
PER_ROUND = 4
RANK_SCRIPT = Path(__file__).with_name("group_rank.py")


def _stream(make_events, n=600):
    data = make_events(users=40, events_per_user=15, seed=3)
    users = sorted({e.user_id for e in data.events})
    part = {u: i % PARTITIONS for i, u in enumerate(users)}
    return [(part[e.user_id], e) for e in data.events[:n]]


def test_group_of_one_is_no_group():
    assert Group.from_env({}) is None
    assert Group.from_env({"WORLD_SIZE": "1", "RANK": "0"}) is None
    group = Group.from_env({"WORLD_SIZE": "3", "RANK": "1", "LOCAL_RANK": "1"})
    assert (group.rank, group.world, group.publishes) == (1, 3, False)
    assert [p for p in range(8) if group.owns(p)] == [1, 4, 7]


def test_two_ranks_learn_as_one_trainer_with_the_group_batch(make_events, tmp_path, monkeypatch):
    settings = Settings.from_env({}).replace(**OFFLINE, events_partitions=PARTITIONS)
    stream = _stream(make_events)
    shares = [[(i, e) for i, (p, e) in enumerate(stream) if p % 2 == r] for r in range(2)]
    rounds = max(len(s) for s in shares) // PER_ROUND + 1
    torch.save((settings, stream, PER_ROUND, rounds), tmp_path / "input.pt")
    monkeypatch.setenv("GROUP_TEST_DIR", str(tmp_path))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path.cwd()), os.environ.get("PYTHONPATH", "")]))

    assert launch(2, [str(RANK_SCRIPT)], max_restarts=0) == 0
    got = torch.load(tmp_path / "result.pt", weights_only=False)

    # The same rounds through one trainer: each step on both ranks' parts of that round together.
    alone = GlobalTrainer(settings)
    deltas = []
    for r in range(rounds):
        batch = [e for share in shares for _, e in share[r * PER_ROUND : (r + 1) * PER_ROUND]]
        if batch:
            alone._step(batch)
            deltas.append(alone.next_delta().rows["embedding.weight"][0])
    assert got["samples"] == alone.samples == len(stream)
    assert got["clicks"] == alone.clicks
    for key, value in alone.model.state_dict().items():
        torch.testing.assert_close(got["state"][key], value, atol=1e-4, rtol=1e-3, msg=lambda m, key=key: f"{key}: {m}")
    assert len(got["deltas"]) == len(deltas)
    for mine, theirs in zip(got["deltas"], deltas):
        np.testing.assert_array_equal(mine, theirs)  # a delta carries exactly the rows the step changed
    counts = {p: sum(1 for q, _ in stream if q == p) for p in range(PARTITIONS)}
    assert got["offsets"] == counts  # rank 0 knows where every rank's partitions stand
    assert got["ends"] == counts


def test_a_failed_rank_fails_the_launch(tmp_path):
    script = tmp_path / "die.py"
    script.write_text("import os, sys\nsys.exit(3 if os.environ['RANK'] == '1' else 0)\n")
    assert launch(2, [str(script)], max_restarts=0) == 1
