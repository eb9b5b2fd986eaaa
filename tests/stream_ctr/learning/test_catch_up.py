"""The catch-up: the model in use is the trainer's model plus the worker's own steps on events the trainer has not
learned yet; a trainer update that covers them takes them out, and then the model in use is the trainer's."""

import dataclasses

import numpy as np
import pytest
import torch

from stream_ctr.config import Settings
from stream_ctr.learning import loop
from stream_ctr.learning.catch_up import CatchUp, positions_of
from stream_ctr.learning.heads import HeadParams, sigmoid
from stream_ctr.models import embedding_tables
from stream_ctr.quality.metrics import logloss
from stream_ctr.trainer.global_trainer import GlobalTrainer

SETTINGS = Settings(features="category,segment")


@pytest.fixture
def stream(make_events):
    return make_events(users=30, events_per_user=20, seed=5).events


def _tables(model) -> dict[str, torch.Tensor]:
    return {k: t.weight.detach().clone() for k, t in embedding_tables(model).items()}


def _trainer_covers(trainer, base, events, upto):
    """The trainer learns ``events`` (partition 0, up to offset ``upto``) and publishes a delta; the new base."""
    trainer.learn_many(events)
    trainer.advance({0: upto})
    delta = trainer.next_delta()
    return base.advanced(delta), delta


def test_local_steps_stay_until_the_trainer_covers_them_then_the_model_is_the_trainers(stream):
    trainer = GlobalTrainer(SETTINGS)
    base = trainer.snapshot().build()
    catch_up = CatchUp(SETTINGS.trainer_lr, max_events=10_000)
    catch_up.rebase(base)
    first, second = stream[:40], stream[40:80]
    catch_up.learn(first, {0: 40})
    catch_up.learn(second, {0: 80})
    assert catch_up.held_events == 80
    assert catch_up.current.snapshot.offsets == {0: 80}  # it has learned everything read

    base, delta = _trainer_covers(trainer, base, first, 40)
    catch_up.rebase(base, delta)
    assert catch_up.held_events == 40  # the first batch's steps left: the trainer's delta has them
    in_use, trainer_now = _tables(catch_up.current.model), _tables(base.model)
    rows_second = np.unique(base.encoder.encode_events(second)[0])
    for key in in_use:
        other = np.setdiff1d(np.arange(len(in_use[key])), rows_second)
        assert torch.allclose(in_use[key][other], trainer_now[key][other], atol=1e-6)
        assert not torch.allclose(in_use[key][rows_second], trainer_now[key][rows_second])

    base, delta = _trainer_covers(trainer, base, second, 80)
    catch_up.rebase(base, delta)
    assert catch_up.held_events == 0
    for key, weight in _tables(catch_up.current.model).items():
        assert torch.equal(weight, _tables(base.model)[key])  # bit for bit, no residue
    dense = {k: v for k, v in base.model.state_dict().items() if k not in embedding_tables(base.model)}
    assert all(torch.equal(catch_up.current.model.state_dict()[k], v) for k, v in dense.items())


def test_the_local_steps_learn_the_events_scored(stream):
    base = GlobalTrainer(SETTINGS).snapshot().build()
    catch_up = CatchUp(SETTINGS.trainer_lr, max_events=10_000)
    catch_up.rebase(base)
    labels = np.array([e.label for e in stream[:200]], dtype=np.float32)
    base_logits = base.forward(stream[:200])[0]
    for lo in range(0, 200, 20):
        catch_up.learn(stream[lo : lo + 20], {0: lo + 20})
    after = logloss(labels, sigmoid(catch_up.current.forward(stream[:200])[0]))
    assert after < logloss(labels, sigmoid(base_logits)) - 0.01
    assert np.array_equal(base.forward(stream[:200])[0], base_logits)  # the trainer's model is not touched


def test_memory_is_bounded_and_the_position_falls_back_to_the_trainers(stream):
    base = GlobalTrainer(SETTINGS).snapshot().build()
    catch_up = CatchUp(SETTINGS.trainer_lr, max_events=50)
    catch_up.rebase(base)
    for lo in range(0, 200, 20):
        catch_up.learn(stream[lo : lo + 20], {3: lo + 20})
        assert catch_up.held_events <= 50
    # The events before the oldest step kept are not in the model in use: it has learned partition 3 only as far
    # as the trainer has (nothing), and its staleness says so.
    assert catch_up.current.snapshot.offsets.get(3, 0) == 0


def test_a_full_snapshot_keeps_the_steps_it_does_not_cover(stream):
    trainer = GlobalTrainer(SETTINGS)
    base = trainer.snapshot().build()
    catch_up = CatchUp(SETTINGS.trainer_lr, max_events=10_000)
    catch_up.rebase(base)
    catch_up.learn(stream[:40], {0: 40})
    stepped = _tables(catch_up.current.model)
    catch_up.rebase(trainer.snapshot().build())  # a newer full snapshot that has learned nothing yet
    assert catch_up.held_events == 40
    for key, weight in _tables(catch_up.current.model).items():
        assert torch.allclose(weight, stepped[key], atol=1e-6)


def test_in_a_batch_a_users_later_events_are_scored_after_the_earlier_ones_were_learned(make_events):
    events = make_events(users=1, events_per_user=30, seed=1).events
    clicks = [dataclasses.replace(e, label=1) for e in events]
    base = GlobalTrainer(SETTINGS).snapshot().build()
    catch_up = CatchUp(SETTINGS.trainer_lr, max_events=10_000)
    catch_up.rebase(base)
    records = [(e, i) for i, e in enumerate(clicks)]
    result = loop.test_then_train(records, catch_up.current, {}, HeadParams(), catch_up=catch_up)
    p = result.arrays()[2]["global"]
    plain = loop.test_then_train(records, base, {}, HeadParams()).arrays()[2]["global"]
    assert np.allclose(plain, sigmoid(base.forward(clicks)[0]))  # without the catch-up: one model for the batch
    assert p[0] == pytest.approx(plain[0])
    assert np.all(np.diff(p - plain) > 0)  # each click raised the user's first-order weight before the next event
    row = torch.from_numpy(base.encoder.user_rows([clicks[0].user_id]))
    before = embedding_tables(catch_up.current.model)["linear.weight"].weight[row].clone()
    catch_up.learn(result.events, {0: len(records)}, result.user_steps)
    after = embedding_tables(catch_up.current.model)["linear.weight"].weight[row]
    assert torch.allclose(after - before, torch.tensor(result.user_steps.delta).unsqueeze(1))  # in-order steps only


def test_positions_are_the_next_offset_per_partition():
    assert positions_of([0, 1, 0, 1], [5, 9, 7, 8]) == {0: 8, 1: 10}


def test_it_is_off_when_the_setting_is_zero():
    assert CatchUp.from_settings(Settings(catch_up_events=0)) is None
    assert CatchUp.from_settings(Settings()).max_events == Settings().catch_up_events
    with pytest.raises(ValueError):
        CatchUp(0.1, max_events=0)
