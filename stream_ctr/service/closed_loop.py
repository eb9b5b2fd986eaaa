"""``stream-ctr simulate``: the closed loop against a running service.

Synthetic users (:class:`~stream_ctr.data.synthetic.SyntheticWorld`) ask a worker's ``POST /v1/score`` for a
ranking, are shown the top k, click with their true probabilities, and their events go to ``ctr.events``, where
the worker and the trainer learn from them: what the service learns changes what it serves next. The result is
the per-arm CTR of what was served, and its expected CTR (mean true probability of the shown items) with a
delta-method CI over users, between the random floor and the oracle ceiling.
"""

from __future__ import annotations

import numpy as np

from stream_ctr import topics
from stream_ctr.broker.replay import producer
from stream_ctr.contracts.arms import CONTROL
from stream_ctr.contracts.events import encode_event
from stream_ctr.data.synthetic import SyntheticConfig, SyntheticWorld
from stream_ctr.experiments.simulate import ClosedLoop, SimConfig, render_markdown
from stream_ctr.experiments.stats import Difference, Ratio, ratio_difference, ratio_estimate
from stream_ctr.serving.client import ScoringClient

__all__ = ["expected_ctr_intervals", "render_closed_loop", "run_closed_loop"]


def run_closed_loop(
    settings, sim: SimConfig, world: SyntheticConfig, url: str | None = None, progress=None
) -> ClosedLoop:
    """Run ``sim`` against the worker at ``url`` (default: the settings' worker); events go to ``ctr.events``."""
    loop = ClosedLoop(SyntheticWorld.from_config(world), sim)
    client = ScoringClient(url or settings.web_url)
    prod = producer(settings)
    topic = topics.events(settings).name
    try:
        loop.run(client.score, lambda e: prod.send(topic, key=e.user_id.encode(), value=encode_event(e)), progress)
        prod.flush()
    finally:
        prod.close()
        client.close()
    return loop


def expected_ctr_intervals(loop: ClosedLoop) -> dict:
    """Per arm, as ``Ratio``s over users: the expected CTR of what was served, its *uplift* over the random floor
    of the same requests, and the share of the oracle's uplift it captured; uplift differences to the control.

    The uplift removes what the user and the candidates bring whatever the ranking (a heavy clicker clicks a lot
    under any arm), so arms are compared on what their ranking added: far less variance than raw CTR."""
    rows: dict[str, list] = {}
    for by_arm in loop.per_user.values():
        for arm, t in by_arm.items():
            rows.setdefault(arm, []).append((t.expected, t.random, t.oracle, t.impressions))
    per_arm = {arm: np.array(r, dtype=float) for arm, r in rows.items()}
    out: dict[str, dict[str, Ratio | Difference]] = {}
    for arm, r in per_arm.items():
        expected, random, oracle, n = r.T
        out[arm] = {
            "expected": ratio_estimate(expected, n),
            "uplift": ratio_estimate(expected - random, n),
            "captured": ratio_estimate(expected - random, oracle - random),
        }
    if CONTROL in per_arm:
        b = per_arm[CONTROL]
        for arm, r in per_arm.items():
            if arm != CONTROL:
                out[arm]["vs_control"] = ratio_difference(r[:, 0] - r[:, 1], r[:, 3], b[:, 0] - b[:, 1], b[:, 3])
    return out


def render_closed_loop(loop: ClosedLoop) -> str:
    lines = [
        "## Closed loop: what each arm served (simulated users, true click probabilities known)",
        "",
        render_markdown(loop.report()),
        "",
        f"| arm | expected CTR [95% CI] | uplift over random [95% CI] | share of oracle uplift | "
        f"Δ uplift vs {CONTROL} [95% CI] |",
        "|---|---|---|---|---|",
    ]
    for arm, m in sorted(expected_ctr_intervals(loop).items()):
        e, u, c, d = m["expected"], m["uplift"], m["captured"], m.get("vs_control")
        lines.append(
            f"| {arm} | {e.value:.4f} [{e.ci[0]:.4f}, {e.ci[1]:.4f}] | {u.value:+.4f} [{u.ci[0]:+.4f}, "
            f"{u.ci[1]:+.4f}] | {c.value:.1%} | {d or '—'} |"
        )
    lines += [
        "",
        "Expected CTR = mean true click probability of the shown items (less noisy than clicks); uplift = "
        "expected CTR minus the random floor of the same requests (what the ranking added); the oracle "
        "ranks the same candidates by true probability. CIs: delta method over users (the randomisation "
        "unit). * = the CI excludes 0.",
        "",
    ]
    return "\n".join(lines)
