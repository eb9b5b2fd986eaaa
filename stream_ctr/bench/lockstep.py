"""The worker and the trainer of a deployment in one process, in lockstep: the service without the race.

Events go in time order, in batches of ``batch_size``. Each batch is scored by every arm with the model in use
(:func:`~stream_ctr.learning.loop.test_then_train`, the worker's own step, which then fine-tunes the heads); then the
global trainer learns it (:class:`~stream_ctr.trainer.global_trainer.GlobalTrainer`), publishing a delta every
``delta_every`` samples (and a full snapshot every ``full_snapshot_every`` deltas), which the scorer applies
from its bytes, as a worker does; between deltas the scorer takes the trainer's step on what it scored, as a
worker does (:mod:`stream_ctr.learning.catch_up`, unless ``catch_up_events`` is 0). The progressive-quality benchmark
and the drift detectors' tests run the service this way, so their numbers are deterministic.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from stream_ctr.config import Settings
from stream_ctr.contracts.events import Event
from stream_ctr.learning.catch_up import CatchUp
from stream_ctr.learning.drift import DriftParams
from stream_ctr.learning.heads import HeadParams
from stream_ctr.learning.loop import BatchResult, test_then_train
from stream_ctr.models.delta import Delta
from stream_ctr.trainer.global_trainer import GlobalTrainer

__all__ = ["Step", "lockstep"]


@dataclass
class Step:
    batch: Sequence[Event]  # in stream order
    result: BatchResult  # the worker's step on it (its rows are grouped by user)
    published: int  # bytes the trainer wrote to the model topics while learning it


def lockstep(settings: Settings, events: Sequence[Event], band_z: float = DriftParams.user_z) -> Iterator[Step]:
    """One :class:`Step` per batch of ``events`` (one partition: an event's offset is its index)."""
    trainer = GlobalTrainer(settings)
    model = trainer.snapshot().build()
    catch_up = CatchUp.from_settings(settings)  # the worker's own steps between the trainer's deltas
    if catch_up is not None:
        catch_up.rebase(model)
    states: dict = {}
    params = HeadParams.from_settings(settings)
    size = settings.batch_size
    for lo in range(0, len(events), size):
        batch = events[lo : lo + size]
        scorer = model if catch_up is None else catch_up.current
        assert scorer is not None
        records = [(e, lo + i) for i, e in enumerate(batch)]
        result = test_then_train(records, scorer, states, params, band_z, catch_up)
        if catch_up is not None:
            catch_up.learn(result.events, {0: lo + len(batch)}, result.user_steps)
        published = 0
        for chunk in range(0, len(batch), settings.delta_every):  # the trainer publishes as it learns
            part = batch[chunk : chunk + settings.delta_every]
            trainer.learn_many(part)
            trainer.advance({0: lo + chunk + len(part)})
            delta = trainer.maybe_delta()
            if delta is not None:
                data = delta.to_bytes()
                published += len(data)
                delta = Delta.from_bytes(data)
                model = model.advanced(delta)
                if catch_up is not None:
                    catch_up.rebase(model, delta)
                if trainer.full_due:  # written to ctr.model and to the chain, as the trainer does
                    published += 2 * len(trainer.snapshot().to_bytes())
        yield Step(batch, result, published)
