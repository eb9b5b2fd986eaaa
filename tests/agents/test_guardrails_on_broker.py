"""A guardrail's stop on the real broker: the worker's enforcer publishes it on ``ctr.experiments`` with an audit
record, another worker's follower applies it, a restart with the original file keeps it, and ``stream-ctr ab resume``
(the CLI, a real process) publishes the previous weights again, which the followers apply."""

import asyncio
import json
import os
import subprocess
import sys

import pytest

from stream_ctr import topics
from stream_ctr.agents.guardrails import ExperimentFollower
from stream_ctr.broker.admin import ensure_topics
from stream_ctr.contracts.arms import ARMS
from stream_ctr.experiments.assignment import Experiment
from stream_ctr.experiments.attribution import ArmResults
from stream_ctr.experiments.registry import history, last_definition, register
from stream_ctr.monitoring.prometheus import WorkerMetrics
from tests.stream_ctr.experiments.test_guardrails import GUARDED, _feed

pytestmark = pytest.mark.broker


class _Worker:
    """What a worker holds of the experiment: its per-arm results, metrics and the follower that updates them."""

    def __init__(self, settings, experiment: Experiment, name: str):
        self.results = ArmResults(experiment)
        self.metrics = WorkerMetrics(ARMS, 100)
        self.metrics.track_experiment(self.results)
        self.used: list[Experiment] = []
        self.follower = ExperimentFollower(
            settings, topics.experiments(settings).name, self.results, self.metrics, self.use, by=name
        )

    def use(self, experiment: Experiment) -> None:
        self.results.experiment = experiment
        self.used.append(experiment)


def _follow(worker: _Worker) -> None:
    """One tick of the worker's follower, in a loop of its own (then its consumer is closed)."""

    async def tick():
        await worker.follower.follow()
        await worker.follower.close()

    asyncio.run(tick())


def _cli(settings, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **settings.to_env()}
    return subprocess.run(
        [sys.executable, "-m", "stream_ctr.cli", "ab", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_a_breached_guardrail_stops_the_arm_through_ctr_experiments_and_resume_reverses_it(settings_factory, tmp_path):
    path = tmp_path / "exp.json"
    path.write_text(json.dumps(GUARDED))
    s = settings_factory(experiment_file=str(path))
    ensure_topics(s.kafka_bootstrap, topics.declared(s))
    topic = topics.experiments(s).name
    configured = Experiment.load(path)
    register(s, topic, configured)  # the workers' start

    bad, other = _Worker(s, configured, "worker-a"), _Worker(s, configured, "worker-b")
    _feed(bad.results, {"global": 0.30, "ft": 0.30, "ft_lc": 0.20}, users=600)  # ft_lc planted 10 points worse
    assert asyncio.run(bad.follower.enforce()) == ["ft_lc"]
    assert asyncio.run(bad.follower.enforce()) == []  # stopped once: not again

    published = last_definition(s, topic, configured.name)
    stop = published.stopped["ft_lc"]
    assert (stop.guardrail, stop.by, stop.weight) == ("ctr", "worker-a", 1.0) and "guardrail ctr" in stop.reason
    assert [a.weight for a in published.arms] == [1.0, 1.0, 0.0]
    assert bad.results.experiment == published and bad.used == [published]
    stops = {
        (smp.labels["arm"], smp.labels["guardrail"]): smp.value
        for smp in bad.metrics.guardrail_stops.collect()[0].samples
        if smp.name.endswith("_total")
    }
    assert stops[("ft_lc", "ctr")] == 1 and stops[("ft", "ctr")] == 0

    _follow(other)  # another worker picks the stop up from the topic
    assert other.results.experiment == published
    ft_lc_user = next(str(u) for u in range(1000) if configured.assign(str(u)).arm == "ft_lc")
    assert other.results.experiment.assign(ft_lc_user).arm == "global"

    register(s, topic, configured)  # a worker restarting with the original file does not undo the stop
    assert last_definition(s, topic, configured.name) == published
    assert configured.keeping_stops_of(published) == published

    out = _cli(s, "resume", "ft_lc", "--reason", "fixed the heads")
    assert out.returncode == 0, out.stderr[-2000:]
    resumed = last_definition(s, topic, configured.name)
    assert resumed == configured  # the previous weights, published again
    _follow(other)
    assert other.results.experiment == configured and other.results.experiment.assign(ft_lc_user).arm == "ft_lc"

    audit = history(s, topic, configured.name)
    assert [(r["action"], r["arm"]) for r in audit] == [("stop", "ft_lc"), ("resume", "ft_lc")]
    assert audit[0]["by"] == "worker-a" and audit[0]["weights_after"] == {"global": 1.0, "ft": 1.0, "ft_lc": 0.0}
    assert audit[1]["reason"] == "fixed the heads" and "stream-ctr ab resume" in audit[1]["by"]
    assert audit[0]["at"] < audit[1]["at"]
    lines = _cli(s, "history").stdout.splitlines()
    assert [json.loads(line)["action"] for line in lines] == ["stop", "resume"]
    refused = _cli(s, "resume", "ft_lc", "--reason", "again")
    assert refused.returncode == 2 and "not stopped" in refused.stderr


def test_a_follower_ignores_another_run_under_the_same_name(settings_factory):
    s = settings_factory()
    ensure_topics(s.kafka_bootstrap, topics.declared(s))
    topic = topics.experiments(s).name
    running = Experiment.from_dict(GUARDED)
    register(s, topic, running)
    register(s, topic, Experiment.from_dict({**GUARDED, "salt": "s2"}))  # someone starts a new run
    worker = _Worker(s, running, "w")
    _follow(worker)
    assert worker.results.experiment == running and worker.used == []
