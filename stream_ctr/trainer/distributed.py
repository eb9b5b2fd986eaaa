"""A data-parallel global trainer over ``torch.distributed``: N ranks, one model, one step at a time.

Each rank consumes a disjoint share of the ``ctr.events`` partitions (partition ``p`` belongs to rank
``p % world``) and takes its part of every mini-batch from them. A step is synchronous: every rank computes the
gradient of the *summed* loss of its part, one all-reduce adds the gradients of all ranks together with the
number of samples, clicks and loss behind them, and every rank divides by the group's sample count and steps its
own optimiser. The ranks start from the same weights (rank 0's, broadcast) and apply the same averaged gradient,
so they hold the same model after every step, and the group learns as one trainer would with the group's
mini-batch (docs/ARCHITECTURE.md, "Scaling out the trainer"). A rank with nothing to learn still joins the step
with a zero gradient: the group moves in lockstep, as fast as its busiest rank.

Three collectives make a step. A small all-reduce (max) merges what only one rank knows: the next offset and the
end offset of each partition, the newest event time learned, and how many distinct table rows each part uses.
Every rank then holds the whole group's stream position, and rank 0, the one that publishes deltas and snapshots,
writes every rank's offsets into them: a restarted group resumes each partition exactly where the published
weights stopped. An all-gather of each part's row ids gives every rank the union of the rows this step uses; the
one all-reduce (sum) then carries the dense layers' gradients, the embedding gradients of those rows only (a few
hundred of the 32,768, not whole tables) and the sample, click and loss counts. The sparse optimiser (Adagrad)
steps those rows, and a delta carries them.

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.nn.functional as F

__all__ = ["Group", "Position", "Step", "launch"]

#: How long a rank waits for the others in a collective (or to join) before it gives up and exits; the agent then
#: restarts the group. A rank that waits on a stream with nothing new joins a step every 100 ms.
COLLECTIVE_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Position:
    """Where the stream stands, as one rank knows it or (merged) as the group does."""

    offsets: dict[int, int]  # partition -> next offset learned
    ends: dict[int, int]  # partition -> end offset, as of the last fetch
    trained_ts: float  # newest event time learned


@dataclass(frozen=True)
class Step:
    """What one synchronous step did, for the whole group."""

    samples: int
    clicks: int
    loss: float  # mean over the group's samples (nan when there were none)
    #: The table rows the step may have changed: every id any rank's part used.
    rows: torch.Tensor
    position: Position


@dataclass(frozen=True)
class Group:
    """This process's place in a trainer group."""

    rank: int
    world: int
    local_rank: int = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Group | None:
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
        store = dist.TCPStore(
            os.environ["MASTER_ADDR"],
            int(os.environ["MASTER_PORT"]),
            self.world,
            is_master=os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True" and self.rank == 0,
            timeout=timeout,
        )
        prefix = f"stream-ctr/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
        dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo",
            store=dist.PrefixStore(prefix, store),
            rank=self.rank,
            world_size=self.world,
            timeout=timeout,
        )

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

    def step(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        ids: torch.Tensor,
        vals: torch.Tensor,
        labels: torch.Tensor,
        tables: Sequence[str],
        position: Position,
        partitions: int,
    ) -> Step:
        """One synchronous step on this rank's part (``labels`` may be empty; ``tables``: the sparse embedding
        tables, all indexed by ``ids``), and the group's merged position; see the module doc."""
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss = torch.zeros((), device=labels.device)
        if len(labels):
            logit, _ = model(ids, vals)
            loss = F.binary_cross_entropy_with_logits(logit, labels, reduction="sum")
            loss.backward()
        mine = torch.unique(ids) if len(labels) else torch.zeros(0, dtype=torch.long, device=ids.device)
        merged, widest = self._merge(position, len(mine), partitions)
        rows = self._union(mine, widest)
        named = dict(model.named_parameters())
        dense = [p for key, p in named.items() if key not in tables and p.requires_grad]
        sparse = [named[key] for key in tables]
        counts = torch.stack([torch.tensor(float(len(labels)), device=labels.device), labels.sum(), loss.detach()])
        parts = [torch.zeros_like(p).reshape(-1) if p.grad is None else p.grad.reshape(-1) for p in dense]
        parts += [_rows_of(p, rows).reshape(-1) for p in sparse]
        flat = torch.cat(parts + [counts])
        dist.all_reduce(flat)
        samples, clicks, loss_sum = (float(v) for v in flat[-3:].tolist())
        if samples == 0:
            return Step(0, 0, float("nan"), rows, merged)
        flat = flat[:-3] / samples
        offset = 0
        for p in dense:
            p.grad = flat[offset : offset + p.numel()].view_as(p).clone()
            offset += p.numel()
        for p in sparse:
            n = len(rows) * p.shape[1]
            p.grad = torch.sparse_coo_tensor(rows[None], flat[offset : offset + n].view(len(rows), p.shape[1]), p.shape)
            offset += n
        optimizer.step()
        return Step(int(samples), int(round(clicks)), loss_sum / samples, rows, merged)

    def _merge(self, position: Position, ids: int, partitions: int) -> tuple[Position, int]:
        """Every rank's offsets, end offsets and newest event time, merged (max) across the group, and the most
        distinct ids any rank's part used."""
        v = torch.zeros(2 + 2 * partitions, dtype=torch.float64)
        v[0], v[1] = position.trained_ts, ids
        for p, o in position.offsets.items():
            v[2 + p] = o
        for p, e in position.ends.items():
            v[2 + partitions + p] = e
        dist.all_reduce(v, op=dist.ReduceOp.MAX)
        vals = [int(x) for x in v[2:].tolist()]
        offsets = {p: vals[p] for p in range(partitions) if vals[p] > 0 or p in position.offsets}
        return Position(offsets, {p: vals[partitions + p] for p in range(partitions)}, float(v[0])), int(v[1])

    def _union(self, mine: torch.Tensor, widest: int) -> torch.Tensor:
        """The sorted union of every rank's ids (each rank's padded to ``widest`` for the all-gather)."""
        if widest == 0:
            return mine
        padded = torch.full((widest,), -1, dtype=torch.long, device=mine.device)
        padded[: len(mine)] = mine
        gathered = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(gathered, padded)
        union = torch.unique(torch.cat(gathered))
        return union[union >= 0]


def _rows_of(table: torch.nn.Parameter, rows: torch.Tensor) -> torch.Tensor:
    """This rank's gradient of ``table`` at ``rows`` (zeros where its part did not use a row)."""
    out = torch.zeros(len(rows), table.shape[1], dtype=table.dtype, device=table.device)
    if table.grad is None:
        return out
    grad = table.grad.coalesce()
    idx, values = grad.indices()[0], grad.values()
    out[torch.searchsorted(rows, idx)] = values
    return out


def launch(world: int, argv: Sequence[str], max_restarts: int) -> int:
    """Run ``python argv`` as ``world`` ranks under torch's elastic agent on this machine (rendezvous on a port the
    OS picks); a dead rank restarts the whole group, up to ``max_restarts`` times. Returns 0 when every rank
    exited 0 or the agent was stopped by a signal, 1 otherwise."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=world,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="127.0.0.1:0",
        max_restarts=max_restarts,
        monitor_interval=0.5,
    )
    try:
        elastic_launch(config, sys.executable)(*argv)
    except ChildFailedError as failed:
        print(failed.format_msg(), file=sys.stderr)
        return 1
    except SignalException as stopped:  # SIGTERM or SIGINT: the agent has stopped the ranks
        print(f"trainer group stopped by signal {stopped.sigval}", file=sys.stderr)
        return 0
    return 0
