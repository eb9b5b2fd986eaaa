"""One rank of the group test in tests/stream_ctr/test_distributed.py, run by the real launcher.

Reads ``input.pt`` in ``GROUP_TEST_DIR``: settings, ``(partition, event)`` pairs in stream order and the events per
rank per round. Each rank learns the events of the partitions it owns, ``per_round`` at a time, one group step per
round; rank 0 writes its weights, counts, merged offsets and the rows of each delta to ``result.pt``.
"""

import os
from pathlib import Path

import torch

from stream_ctr.trainer.distributed import Group
from stream_ctr.trainer.global_trainer import GlobalTrainer


def main() -> None:
    out = Path(os.environ["GROUP_TEST_DIR"])
    settings, stream, per_round, rounds = torch.load(out / "input.pt", weights_only=False)
    group = Group.from_env()
    trainer = GlobalTrainer(settings, group)
    group.join(trainer.device)
    trainer.sync_group()
    mine = [(i, p, e) for i, (p, e) in enumerate(stream) if group.owns(p)]
    ends = {p: sum(1 for q, _ in stream if q == p) for p in range(settings.events_partitions) if group.owns(p)}
    deltas = []
    for r in range(rounds):
        part = mine[r * per_round : (r + 1) * per_round]
        positions = {
            p: sum(1 for _, q, _ in mine[: r * per_round + k + 1] if q == p) for k, (_, p, _) in enumerate(part)
        }
        trainer.learn_round([e for _, _, e in part], positions, ends)
        if group.publishes and trainer.pending:
            deltas.append(trainer.next_delta().rows["embedding.weight"][0])
    if group.publishes:
        torch.save(
            {
                "state": trainer.model.state_dict(),
                "samples": trainer.samples,
                "clicks": trainer.clicks,
                "offsets": trainer.offsets,
                "ends": trainer.ends,
                "deltas": deltas,
            },
            out / "result.pt",
        )
    group.leave()


if __name__ == "__main__":
    main()
