"""Experiment definition, loading and assignment: stable across processes, on weight, ramp-safe."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from stream_ctr.contracts.arms import ARMS, CONTROL
from stream_ctr.experiments.assignment import Arm, Experiment, ExperimentError, bucket, check_transition

GLOBAL, FT, FT_LC = ARMS


def _experiment(weights=(0.5, 0.25, 0.25), coverage=1.0, salt="s1", name="exp") -> Experiment:
    return Experiment(name, salt, tuple(Arm(a, w) for a, w in zip(ARMS, weights)), coverage)


def test_assignment_is_identical_in_another_process():
    exp = _experiment(coverage=0.7)
    ids = [f"user-{i}" for i in range(1000)]
    script = (
        "import json, sys\n"
        "from stream_ctr.experiments.assignment import Experiment\n"
        "exp = Experiment.from_dict(json.loads(sys.argv[1]))\n"
        "print(json.dumps([list(vars(exp.assign(f'user-{i}')).values()) for i in range(1000)]))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # str hash randomisation must not matter
    out = subprocess.run(
        [sys.executable, "-c", script, json.dumps(exp.to_dict())], capture_output=True, text=True, check=True, env=env
    ).stdout
    here = [[a.arm, a.in_experiment, a.bucket] for a in map(exp.assign, ids)]
    assert json.loads(out) == here


def test_split_follows_weights_within_binomial_tolerance():
    exp = _experiment(weights=(0.5, 0.25, 0.25))
    n = 100_000
    counts = dict.fromkeys(ARMS, 0)
    for i in range(n):
        counts[exp.assign(str(i)).arm] += 1
    for arm, p in exp.weights.items():
        sd = math.sqrt(n * p * (1 - p))
        assert abs(counts[arm] - n * p) < 5 * sd, (arm, counts)


def test_bucket_is_in_range_and_depends_on_salt_and_purpose():
    buckets = [bucket("s", "arm", str(i)) for i in range(2000)]
    assert min(buckets) >= 0 and max(buckets) < 10_000
    assert buckets != [bucket("t", "arm", str(i)) for i in range(2000)]
    assert buckets != [bucket("s", "coverage", str(i)) for i in range(2000)]


def test_coverage_ramp_moves_nobody_between_arms():
    low, high = _experiment(coverage=0.3), _experiment(coverage=0.8)
    check_transition(low, high)
    n, covered_low, covered_high = 20_000, 0, 0
    for i in range(n):
        a, b = low.assign(str(i)), high.assign(str(i))
        covered_low += a.in_experiment
        covered_high += b.in_experiment
        assert a.bucket == b.bucket
        if a.in_experiment:
            assert b.in_experiment and b.arm == a.arm
    for share, covered in ((0.3, covered_low), (0.8, covered_high)):
        assert abs(covered - n * share) < 5 * math.sqrt(n * share * (1 - share))


def test_users_outside_coverage_get_control_and_are_not_analysed():
    exp = Experiment("exp", "s1", (Arm(FT, 1.0), Arm(FT_LC, 1.0)), coverage=0.1)
    outside = [a for a in map(exp.assign, map(str, range(2000))) if not a.in_experiment]
    assert len(outside) > 1500
    assert {a.arm for a in outside} == {CONTROL}
    inside = [a for a in map(exp.assign, map(str, range(2000))) if a.in_experiment]
    assert {a.arm for a in inside} == {FT, FT_LC}


def test_default_and_round_trip(tmp_path):
    exp = Experiment.default()
    assert (exp.name, exp.salt, exp.coverage) == ("label-correction", "v1", 1.0)
    assert [a.name for a in exp.arms] == list(ARMS) and len({a.weight for a in exp.arms}) == 1
    path = tmp_path / "exp.json"
    path.write_text(json.dumps(_experiment(coverage=0.4).to_dict()))
    assert Experiment.load(path) == _experiment(coverage=0.4)
    assert Experiment.from_dict(exp.to_dict()) == exp


_GOOD = {
    "name": "exp",
    "salt": "s1",
    "arms": [{"name": GLOBAL, "weight": 1}, {"name": FT, "weight": 1}],
    "coverage": 0.5,
}


def _with(**changes):
    return json.dumps({**_GOOD, **changes})


def _arm(i, **changes):
    arms = [dict(a) for a in _GOOD["arms"]]
    arms[i].update(changes)
    return _with(arms=arms)


@pytest.mark.parametrize(
    "text, key",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "experiment: expected an object"),
        (json.dumps({k: v for k, v in _GOOD.items() if k != "salt"}), "experiment.salt: missing"),
        (_with(colour="red"), "experiment.colour: unknown key"),
        (_with(name=3), "experiment.name: expected str"),
        (_with(name=""), "experiment.name: must be a non-empty string"),
        (_with(salt=" "), "experiment.salt: must be a non-empty string"),
        (_with(arms={"global": 1}), "experiment.arms: expected list"),
        (_with(arms=[]), "experiment.arms: must name at least one arm"),
        (_with(arms=["global"]), "experiment.arms[0]: expected an object"),
        (_with(coverage=0), "experiment.coverage: must be a number in (0, 1]"),
        (_with(coverage=1.5), "experiment.coverage: must be a number in (0, 1]"),
        (_with(coverage=True), "experiment.coverage: expected float"),
        (_arm(1, weight=0), "experiment.arms[1].weight: must be > 0"),
        (_arm(1, weight=-2.5), "experiment.arms[1].weight: must be > 0"),
        (_arm(1, weight="1"), "experiment.arms[1].weight: expected float"),
        (_arm(0, name="ft_xx"), "experiment.arms[0].name: must be one of"),
        (_arm(1, name=GLOBAL), "experiment.arms[1].name: duplicate arm"),
        (_arm(1, extra=1), "experiment.arms[1].extra: unknown key"),
        (_with(arms=[{"name": FT}]), "experiment.arms[0].weight: missing"),
        (
            _with(arms=[{"name": FT, "weight": 1e-9}, {"name": FT_LC, "weight": 1}]),
            "experiment.arms[0].weight: too small",
        ),
    ],
)
def test_load_errors_name_the_file_and_key(tmp_path, text, key):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ExperimentError) as err:
        Experiment.load(path)
    assert str(err.value).startswith(f"{path}: ")
    assert key in str(err.value)


def test_load_of_a_missing_file_names_it(tmp_path):
    with pytest.raises(ExperimentError, match="cannot read"):
        Experiment.load(tmp_path / "absent.json")


def test_arm_outside_arms_is_refused():
    with pytest.raises(ExperimentError, match="arm.name: must be one of"):
        Arm("ft_xx", 1.0)


def test_transition_refuses_new_weights_under_the_same_salt():
    old = _experiment(weights=(1, 1, 1))
    with pytest.raises(ExperimentError, match="weights of running experiment 'exp' changed .*needs a new salt"):
        check_transition(old, _experiment(weights=(2, 1, 1)))
    with pytest.raises(ExperimentError, match="needs a new salt"):
        check_transition(old, Experiment("exp", "s1", old.arms[:2]))
    with pytest.raises(ExperimentError, match="needs a new salt"):  # the same weights in another order move users
        check_transition(
            _experiment(weights=(2, 1, 1)), Experiment("exp", "s1", (Arm(FT, 1), Arm(GLOBAL, 2), Arm(FT_LC, 1)))
        )


def test_transition_allows_new_salt_coverage_ramp_rescaling_and_first_start():
    old = _experiment(weights=(1, 1, 1), coverage=0.2)
    check_transition(None, old)
    check_transition(old, _experiment(weights=(2, 1, 1), salt="s2"))
    check_transition(old, _experiment(weights=(1, 1, 1), coverage=1.0))
    check_transition(old, _experiment(weights=(3, 3, 3), coverage=0.2))
    check_transition(old, _experiment(weights=(2, 1, 1), name="another"))
