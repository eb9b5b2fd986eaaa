"""Running experiments are recorded on ``ctr.experiments``: weights cannot change under the same salt."""

import json
import os
import subprocess
import sys

import pytest

from stream_ctr import topics
from stream_ctr.broker.admin import ensure_topics
from stream_ctr.experiments.assignment import Experiment, ExperimentError
from stream_ctr.experiments.registry import last_definition, register

pytestmark = pytest.mark.broker


def _exp(weights=(1, 1, 1), salt="s1", coverage=0.5) -> Experiment:
    arms = [{"name": n, "weight": w} for n, w in zip(("global", "ft", "ft_lc"), weights)]
    return Experiment.from_dict({"name": "lc-test", "salt": salt, "arms": arms, "coverage": coverage})


def test_weights_are_frozen_per_salt_and_coverage_may_ramp(settings_factory):
    s = settings_factory()
    ensure_topics(s.kafka_bootstrap, topics.declared(s))
    topic = topics.experiments(s).name
    assert register(s.kafka_bootstrap, topic, _exp()) is None
    assert register(s.kafka_bootstrap, topic, _exp(coverage=0.9)) == _exp()  # ramp up: allowed
    with pytest.raises(ExperimentError, match="new salt"):
        register(s.kafka_bootstrap, topic, _exp(weights=(2, 1, 1), coverage=0.9))
    assert last_definition(s.kafka_bootstrap, topic, "lc-test") == _exp(coverage=0.9)  # the refused one not kept
    register(s.kafka_bootstrap, topic, _exp(weights=(2, 1, 1), salt="s2"))  # a new experiment
    assert last_definition(s.kafka_bootstrap, topic, "lc-test").salt == "s2"


def test_a_worker_refuses_to_start_a_changed_experiment(settings_factory, tmp_path):
    s = settings_factory()
    ensure_topics(s.kafka_bootstrap, topics.declared(s))
    register(s.kafka_bootstrap, topics.experiments(s).name, _exp())
    path = tmp_path / "exp.json"
    path.write_text(json.dumps(_exp(weights=(1, 1, 2)).to_dict()))
    env = {**os.environ, **s.replace(experiment_file=str(path)).to_env()}
    out = subprocess.run(
        [sys.executable, "-m", "stream_ctr.cli", "worker"], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 2, out.stderr[-2000:]
    assert "experiment error" in out.stderr and "weights" in out.stderr and "salt" in out.stderr
