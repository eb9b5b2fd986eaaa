"""``stream-ctr ab report``: the experiment's per-arm results, read back from the topics, with confidence intervals.

Every exposure on ``ctr.exposures`` (what a scoring request served, to whom, under which arm) is joined with the
events on ``ctr.events`` that carry its ``request_id`` and arrived within the attribution window. Users inside the
experiment's coverage are the units: per user and arm the report sums impressions, clicks and served scores, so a
ratio metric (CTR) gets its delta-method CI over users (:mod:`.stats`), each treatment arm is compared with the
control, and the users per arm are checked against the configured weights (sample-ratio mismatch).

>>> exposures = [{"request_id": "r1", "user_id": "a", "arm": "ft", "in_experiment": True, "ts": 0.0,
...               "items": [{"item_id": "i1", "score": 0.8, "position": 0}]}]
>>> events = [({"request_id": "r1", "user_id": "a", "item_id": "i1", "label": 1}, 5.0)]
>>> arms = collect(exposures, events, window_s=60)
>>> arms["ft"].users, arms["ft"].clicks
({'a': [1, 1, 0.8]}, [1])
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stream_ctr.contracts.arms import CONTROL
from stream_ctr.experiments.exposures import ExposureIndex, read_logs
from stream_ctr.experiments.sequential import PLANNED_USERS, SequentialDifference, sequential_difference, srm_p_value
from stream_ctr.experiments.stats import SRM_ALPHA, ratio_difference, ratio_estimate, srm_test
from stream_ctr.quality.metrics import calibration, gauc, logloss

__all__ = ["ArmData", "analyse", "collect", "read_results", "render_markdown"]


@dataclass
class ArmData:
    """One arm's attributed impressions: per user ``[impressions, clicks, score sum]`` and the rows for gAUC."""

    users: dict[str, list] = field(default_factory=dict)
    requested: set[str] = field(default_factory=set)  # users with at least one request in the experiment
    row_users: list[str] = field(default_factory=list)
    clicks: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    before: dict[str, list] = field(default_factory=dict)  # user -> [impressions, clicks] before the first exposure

    def add(self, user: str, label: int, score: float) -> None:
        t = self.users.setdefault(user, [0, 0, 0.0])
        t[0] += 1
        t[1] += label
        t[2] += score
        self.row_users.append(user)
        self.clicks.append(label)
        self.scores.append(score)


def collect(
    exposures: Iterable[Mapping], events: Iterable[tuple[Mapping, float]], window_s: float
) -> dict[str, ArmData]:
    """Join exposure records with ``(event, arrival epoch seconds)`` pairs (:class:`.exposures.ExposureIndex`);
    only in-experiment users count. An event with no ``request_id`` from before its user's first exposure counts
    toward the user's click rate before the experiment (``ArmData.before``, CUPED's covariate)."""
    index = ExposureIndex()
    arms: dict[str, ArmData] = {}
    for exp in exposures:
        if not exp["in_experiment"]:
            continue
        arms.setdefault(exp["arm"], ArmData()).requested.add(exp["user_id"])
        index.add(exp)
    for event, arrived in events:
        if event.get("request_id") is None:
            arm = index.first_arm_before(event)
            if arm:
                t = arms[arm].before.setdefault(event["user_id"], [0, 0])
                t[0], t[1] = t[0] + 1, t[1] + int(event["label"])
            continue
        hit = index.match(event, arrived, window_s)
        if hit is not None:
            arms[hit[0].arm].add(event["user_id"], int(event["label"]), hit[1])
    return arms


def analyse(arms: Mapping[str, ArmData], weights: Mapping[str, float], planned_users: int = PLANNED_USERS) -> dict:
    """Per-arm CTR with CI, difference to the control with CI, logloss, calibration, gAUC, and the SRM test."""
    out: dict[str, dict[str, Any]] = {}  # arm -> its row (counts, a Ratio or None, metrics, a Difference)
    per_user = {arm: np.array(list(d.users.values()), dtype=float).reshape(-1, 3) for arm, d in arms.items()}
    for arm, data in arms.items():
        t = per_user[arm]
        y, p = np.array(data.clicks, dtype=float), np.array(data.scores, dtype=float)
        ctr = ratio_estimate(t[:, 1], t[:, 0]) if len(t) else None
        out[arm] = {
            "users": len(data.requested),
            "impressions": int(t[:, 0].sum()),
            "clicks": int(t[:, 1].sum()),
            "ctr": ctr,
            "logloss": logloss(y, p) if len(y) else None,
            "calibration": calibration(y, p) if len(y) else None,
            "gauc": gauc(np.array(data.row_users, dtype=object), y, p) if len(y) else None,
        }
    control = CONTROL if CONTROL in arms else next(iter(arms), None)
    for arm in arms:
        if arm != control and control is not None and out[arm]["ctr"] and out[control]["ctr"]:
            a, b = per_user[arm], per_user[control]
            out[arm]["vs_control"] = ratio_difference(a[:, 1], a[:, 0], b[:, 1], b[:, 0])
            # always valid: may be read at any moment, however often (the fixed CI only once, at a planned size)
            out[arm]["vs_control_sequence"] = _sequential(arms[control], arms[arm], (b, a), planned_users)
    users = {arm: out.get(arm, {"users": 0})["users"] for arm in weights}
    return {
        "control": control,
        "arms": out,
        "srm": srm_test(users, weights),
        "srm_sequential_p": srm_p_value(users, weights),  # always valid: may be read at every moment
    }


def _sequential(
    control: ArmData, arm: ArmData, sums: tuple[np.ndarray, np.ndarray], planned_users: int
) -> SequentialDifference:
    """``arm`` minus ``control`` as an always-valid interval from their per-user ``sums`` (rows of ``[impressions,
    clicks, ...]`` in the order of ``ArmData.users``), with CUPED over each user's click rate before their first
    exposure when some users have one (the others get the mean rate: a pre-experiment value either way)."""
    users = [list(d.users) for d in (control, arm)]
    known = {u: c / n for d in (control, arm) for u, (n, c) in d.before.items() if n > 0}
    covariate = None
    if known:
        fill = float(np.mean(list(known.values())))
        covariate = (np.array([known.get(u, fill) for u in users[0]]), np.array([known.get(u, fill) for u in users[1]]))
    a, b = (sums[0][:, 1], sums[0][:, 0]), (sums[1][:, 1], sums[1][:, 0])
    return sequential_difference(a, b, covariate=covariate, t_star=planned_users)


def _f(x, fmt: str = "{:.4f}") -> str:
    return "n/a" if x is None or x != x else fmt.format(x)


def render_markdown(result: dict, title: str = "A/B experiment") -> str:
    lines = [
        f"## {title}",
        "",
        "| arm | users | impressions | clicks | CTR [95% CI] | Δ CTR vs "
        f"{result['control']} [fixed-horizon 95% CI] | always-valid 95% | lift | logloss | calibration | gAUC |",
        "|---|---:|---:|---:|---|---|---|---|---|---|---|",
    ]
    for arm, m in result["arms"].items():
        ctr = m["ctr"]
        ctr_s = f"{ctr.value:.4f} [{ctr.ci[0]:.4f}, {ctr.ci[1]:.4f}]" if ctr else "n/a"
        d = m.get("vs_control")
        lift = f"{d.lift:+.1%}" if d else "—"
        seq = m.get("vs_control_sequence")
        seq_s = "—"
        if seq is not None:
            lo, hi = seq.sequence
            cuped = f", CUPED -{seq.variance_reduction:.0%} var" if seq.cuped else ""
            seq_s = f"[{lo:+.4f}, {hi:+.4f}]{' *' if seq.significant else ''}{cuped}"
        lines.append(
            f"| {arm} | {m['users']} | {m['impressions']} | {m['clicks']} | {ctr_s} | {d or '—'} | {seq_s} | {lift} | "
            f"{_f(m['logloss'])} | {_f(m['calibration'])} | {_f(m['gauc'])} |"
        )
    srm, p_any = result["srm"], result["srm_sequential_p"]
    alarm = p_any < SRM_ALPHA
    verdict = "**SRM alarm**: the split does not match the weights" if alarm else "no sample-ratio mismatch"
    lines += [
        "",
        f"Sample-ratio check of users per arm against the configured weights: always-valid (Dirichlet-multinomial) "
        f"p = {p_any:.4g} ({verdict}; alarm below p = {SRM_ALPHA}); fixed-horizon chi² = {srm.chi2:.2f}, "
        f"p = {srm.p_value:.4g}{' (below the alarm level at this reading)' if srm.alarm and not alarm else ''}. "
        "* = the CI excludes 0. The fixed-horizon CI "
        "holds only when read once, at a size planned in advance; the always-valid one holds however often the "
        "experiment is read and may be stopped on (stream_ctr/experiments/sequential.py).",
        "",
    ]
    return "\n".join(lines)


def read_results(settings, experiment, planned_users: int = PLANNED_USERS) -> dict:
    """:func:`analyse` of everything on the settings' ``ctr.exposures`` and ``ctr.events`` for ``experiment``;
    ``planned_users``: where the always-valid intervals are tightest."""
    exposures, events = read_logs(settings, experiment.name)
    arms = collect(exposures, events, settings.attribution_window_s)
    return analyse(arms, experiment.weights, planned_users)
