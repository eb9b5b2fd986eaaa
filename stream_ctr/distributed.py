"""A data-parallel global trainer over ``torch.distributed``: N ranks, one model, one step at a time.

Each rank consumes a disjoint share of the ``ctr.events`` partitions (partition ``p`` belongs to rank
``p % world``) and takes its part of every mini-batch from them. A step is synchronous: every rank computes the
gradient of the *summed* loss of its part, one all-reduce adds the gradients of all ranks together with the
number of samples, clicks and loss behind them, and every rank divides by the group's sample count and steps its
own optimiser. The ranks start from the same weights (rank 0's, broadcast) and apply the same averaged gradient,
so they hold the same model after every step, and the group learns as one trainer would with the group's
mini-batch (docs/ARCHITECTURE.md, "Scaling out the trainer"). A rank with nothing to learn still joins the step
with a zero gradient: the group moves in lockstep, as fast as its busiest rank.

A second, small all-reduce (max) merges what only one rank knows: the next offset and the end offset of each
partition and the newest event time learned. Every rank then holds the whole group's stream position, and rank 0,
the one that publishes deltas and snapshots, writes every rank's offsets into them: a restarted group resumes
each partition exactly where the published weights stopped.

The embedding tables take dense gradients here (a sparse all-reduce is not in gloo's fast path); Adagrad leaves a
row with a zero gradient exactly as it was, so the rows a delta must carry are those with a non-zero reduced
gradient.

Launch: ``torchrun`` (each rank reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) or
``stream-ctr trainer --world-size N``, which runs torch's elastic agent (:func:`launch`): the rendezvous binds
port 0, and when any rank dies the agent stops the others and starts the whole group again, which resumes from
the newest full snapshot. Each start of the group joins the process group under its own key prefix
(``TORCHELASTIC_RESTART_COUNT``): a restarted rank must not read the addresses its killed predecessor left in
the agent's store.
"""

from __future__ import annotations

import os
import sys
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Mapping, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F

__all__ = ["Group", "Step", "launch"]

#: How long a rank waits for the others in a collective (or to join) before it gives up and exits; the agent then
#: restarts the group. A rank that waits on a stream with nothing new joins a step every 100 ms.
COLLECTIVE_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Step:
    """What one synchronous step did, for the whole group."""

    samples: int
    clicks: int
    loss: float  # mean over the group's samples (nan when there were none)
    #: Per table key, the rows whose reduced gradient was non-zero (the rows the step changed).
    touched: dict[str, torch.Tensor]


@dataclass(frozen=True)
class Group:
    """This process's place in a trainer group."""

    rank: int
    world: int
    local_rank: int = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Group | None":
        """The group torchrun (or :func:`launch`) put this process in; None outside one or in a group of one."""
        env = os.environ if env is None else env
        world = int(env.get("WORLD_SIZE", "1"))
        if world <= 1:
            return None
        return cls(int(env["RANK"]), world, int(env.get("LOCAL_RANK", "0")))

    @property
    def publishes(self) -> bool:
        """Rank 0 publishes the group's model and serves its figures."""
        return self.rank == 0

    def owns(self, partition: int) -> bool:
        return partition % self.world == self.rank

    def join(self, device: torch.device) -> None:
        """Join the process group (blocks until every rank has): gloo on CPU, NCCL on CUDA."""
        timeout = timedelta(seconds=COLLECTIVE_TIMEOUT_S)
        store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), self.world,
                              is_master=os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True" and self.rank == 0,
                              timeout=timeout)
        prefix = f"stream-ctr/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", store=dist.PrefixStore(prefix, store),
                                rank=self.rank, world_size=self.world, timeout=timeout)

    def leave(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()

    def broadcast_model(self, model: torch.nn.Module, meta: dict) -> dict:
        """Rank 0's weights into every rank's ``model``; returns rank 0's ``meta`` (counts, offsets, version)."""
        with torch.no_grad():
            for tensor in model.state_dict().values():
                dist.broadcast(tensor, src=0)
        box = [meta]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def step(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, ids: torch.Tensor, vals: torch.Tensor,
             labels: torch.Tensor, tables: Sequence[str]) -> Step:
        """One synchronous step on this rank's part (``labels`` may be empty); see the module doc."""
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            else:
                p.grad.zero_()
        loss = torch.zeros((), device=labels.device)
        if len(labels):
            logit, _ = model(ids, vals)
            loss = F.binary_cross_entropy_with_logits(logit, labels, reduction="sum")
            loss.backward()
        counts = torch.stack([torch.tensor(float(len(labels)), device=labels.device), labels.sum(), loss.detach()])
        flat = torch.cat([p.grad.reshape(-1) for p in params] + [counts])
        dist.all_reduce(flat)
        samples, clicks, loss_sum = (float(v) for v in flat[-3:].tolist())
        if samples == 0:
            return Step(0, 0, float("nan"), {})
        flat = flat[:-3] / samples
        offset = 0
        for p in params:
            p.grad.copy_(flat[offset: offset + p.numel()].view_as(p))
            offset += p.numel()
        optimizer.step()
        state = dict(model.named_parameters())
        touched = {key: state[key].grad.abs().sum(1).nonzero().flatten() for key in tables}
        return Step(int(samples), int(round(clicks)), loss_sum / samples, touched)

    def merge_positions(self, offsets: Mapping[int, int], ends: Mapping[int, int], trained_ts: float,
                        partitions: int) -> tuple[dict[int, int], dict[int, int], float]:
        """Every rank's offsets, end offsets and newest event time, merged (max) across the group."""
        v = torch.zeros(1 + 2 * partitions, dtype=torch.float64)
        v[0] = trained_ts
        for p, o in offsets.items():
            v[1 + p] = o
        for p, e in ends.items():
            v[1 + partitions + p] = e
        dist.all_reduce(v, op=dist.ReduceOp.MAX)
        vals = [int(x) for x in v[1:].tolist()]
        merged = {p: vals[p] for p in range(partitions) if vals[p] > 0 or p in offsets}
        return merged, {p: vals[partitions + p] for p in range(partitions)}, float(v[0])


def launch(world: int, argv: Sequence[str], max_restarts: int) -> int:
    """Run ``python argv`` as ``world`` ranks under torch's elastic agent on this machine (rendezvous on a port the
    OS picks); a dead rank restarts the whole group, up to ``max_restarts`` times. Returns 0 when every rank
    exited 0 or the agent was stopped by a signal, 1 otherwise."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=world, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="127.0.0.1:0", max_restarts=max_restarts,
                          monitor_interval=0.5)
    try:
        elastic_launch(config, sys.executable)(*argv)
    except ChildFailedError as failed:
        print(failed.format_msg(), file=sys.stderr)
        return 1
    except SignalException as stopped:  # SIGTERM or SIGINT: the agent has stopped the ranks
        print(f"trainer group stopped by signal {stopped.sigval}", file=sys.stderr)
        return 0
    return 0
