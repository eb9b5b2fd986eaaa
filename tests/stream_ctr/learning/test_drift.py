"""Drift detection: the detectors fire after an injected change, within a stated delay, and never before it.

The stream is the synthetic generator's (a world where taste matters: ``taste=3``), run through the service's
own worker step and trainer in lockstep (:mod:`stream_ctr.bench.lockstep`), so the detectors see what a worker sees.
Each scenario injects one change at the middle of the stream's time span; the stable stream has none and its
100,000 events must raise no alarm on any signal.
"""

from __future__ import annotations

import numpy as np
import pytest

from stream_ctr.bench.lockstep import lockstep
from stream_ctr.config import Settings
from stream_ctr.contracts.arms import ARMS
from stream_ctr.data.synthetic import Change, SyntheticConfig, generate_synthetic
from stream_ctr.learning.drift import DriftMonitor, DriftParams, signals, user_z
from stream_ctr.learning.state import _HEADER, _HEADER_U1, _HEADER_U2, UserState

WORLD = dict(users=1000, items=400, events_per_user=100, taste=3.0, seed=3)
SETTINGS = Settings(features="category,segment", batch_size=256, delta_every=256)

#: scenario -> (change, signal that must fire (or a prefix: any of them), most events after the change before it does)
SCENARIOS = {
    "jump": (Change("jump", at=0.5, size=1.0), "global_ctr", 2_000),  # every prior logit +1 at once
    "ramp": (Change("ramp", at=0.5, size=1.0, over=0.2), "global_ctr", 20_000),  # +1 over the next 20,000 events
    "flip": (Change("flip", at=0.5, size=0.5), "logloss_", 10_000),  # half the users' taste reverses: an arm worsens
}


def _alarms(change: Change | None) -> tuple[dict[str, list[int]], int]:
    """Per signal, the stream positions (events so far) of its alarms; and the position of the change."""
    data = generate_synthetic(SyntheticConfig(**WORLD, change=change))
    monitor = DriftMonitor(ARMS, DriftParams())
    fired: dict[str, list[int]] = {signal: [] for signal in signals(ARMS)}
    seen = 0
    for step in lockstep(SETTINGS, data.events):
        seen += len(step.batch)
        for signal in monitor.observe_batch(step.result, now=step.batch[-1].ts):
            fired[signal].append(seen)
    at = sum(e.ts < change.start_ts for e in data.events) if change else len(data.events)
    return fired, at


@pytest.fixture(scope="module")
def stable():
    return _alarms(None)


@pytest.mark.slow
def test_a_long_stable_stream_raises_no_alarm(stable):
    fired, n = stable
    assert n == 100_000
    assert fired == {signal: [] for signal in signals(ARMS)}


@pytest.mark.slow
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_detector_fires_after_the_change_within_its_delay_and_not_before(scenario):
    change, signal, delay = SCENARIOS[scenario]
    fired, at = _alarms(change)
    early = {s: [p for p in positions if p <= at] for s, positions in fired.items()}
    assert not any(early.values()), f"alarms before the change at event {at:,}: {early}"
    first = min((p for s, positions in fired.items() if s.startswith(signal) for p in positions), default=None)
    assert first is not None, f"{signal} never fired after the {scenario} at event {at:,}: {fired}"
    assert first - at <= delay, (scenario, fired, at)


# --- the monitor's bookkeeping and the per-user band ----------------------------------------------------------------


def test_a_signal_drifts_from_its_first_alarm_until_the_hold_passes():
    monitor = DriftMonitor(["global"], DriftParams(hold_s=100.0, block=10, warmup_blocks=5))
    rng = np.random.default_rng(0)
    calm = {"global": np.full(10, 0.5)}
    for t in range(20):
        assert monitor.observe((rng.random(10) < 0.1).astype(float), calm, now=t) == []
    fired = [t for t in range(20, 60) if monitor.observe((rng.random(10) < 0.9).astype(float), calm, now=t)]
    assert fired and fired[0] < 25  # a jump from 10% to 90% clicks
    state = monitor.state(now=fired[-1] + 50)["global_ctr"]
    assert state["drifting"] and state["since"] == fired[0] and state["alarms"] == len(fired)
    assert state["alarm_times"] == fired[-DriftMonitor.HISTORY :]
    after = monitor.state(now=fired[-1] + 101)["global_ctr"]
    assert not after["drifting"] and after["since"] is None


def test_a_rising_logloss_alarms_and_a_falling_one_does_not():
    monitor = DriftMonitor(["global"], DriftParams(block=10, warmup_blocks=5, loss_threshold=0.5))
    labels = np.zeros(10)
    falling = [monitor.observe(labels, {"global": np.full(10, 0.7 - t / 100)}, now=t) for t in range(40)]
    assert not any(falling)
    rising = [t for t in range(40, 80) if monitor.observe(labels, {"global": np.full(10, 0.9)}, now=t)]
    assert rising and rising[0] < 45


def test_the_band_widens_for_users_with_few_events():
    assert user_z(clicks=3, n=3, p_g=0.3) == 0.0  # too few events to tell
    assert abs(user_z(clicks=8, n=10, p_g=0.3)) > 3 > abs(user_z(clicks=5, n=10, p_g=0.3))
    assert abs(user_z(clicks=40, n=100, p_g=0.3)) < 3 < abs(user_z(clicks=50, n=100, p_g=0.3))


def test_a_user_state_remembers_since_when_it_drifts():
    state = UserState.new(window=10, rep_dim=2, arms=("ft",))
    state.drifting(True, ts=100.0)
    state.drifting(True, ts=200.0)  # still the same episode
    back = UserState.from_bytes(state.to_bytes())
    assert back.summary()["drifting"] and back.summary()["drifting_since"] == 100.0
    back.drifting(False, ts=300.0)
    assert back.summary()["drifting_since"] is None and not back.summary()["drifting"]


@pytest.mark.parametrize("magic, header", [(b"U2", _HEADER_U2), (b"U1", _HEADER_U1)])
def test_an_older_state_record_reads_as_not_drifting(magic, header):
    state = UserState.new(window=10, rep_dim=2, arms=("ft",))
    state.ctr.update(1)
    state.drifting(True, ts=5.0)
    state.experiment_key = 7
    record = state.to_bytes()
    older = magic + record[2 : header.size] + record[_HEADER.size :]  # the same fields, the older header's prefix
    back = UserState.from_bytes(older)
    assert back.drift_since == 0.0 and back.ctr.n == 1 and back.heads.keys() == state.heads.keys()
    assert back.experiment_key == (7 if magic == b"U2" else 0)
