"""The ``A/B`` dashboard: the shadow arms on every event, and the online experiment's outcome and integrity."""

from __future__ import annotations

from stream_ctr.contracts.arms import ARMS
from stream_ctr.monitoring.dashboards.panels import (
    FINE_TUNED_GAUC,
    GAUC,
    WORKER,
    Row,
    dashboard,
    mapping,
    per_arm_rate,
    q,
    rate,
    row,
    sel,
    stat,
    steps,
    timeseries,
)


def _ab_shadow_arms() -> Row:
    return row(
        f"Shadow arms: every arm scores every event ({' | '.join(ARMS)})",
        *(
            timeseries(
                f"gAUC per arm ({scope})",
                f"Which arm ranks each user's items best ({scope})? Online gAUC per arm, test-then-train: "
                "every event is scored before it is learned. Averaged over workers; each worker owns a "
                "disjoint set of users.",
                [q(f"avg by (arm) ({sel(GAUC, scope=scope)})", "{{arm}}")],
                "none",
                w=9,
                decimals=3,
            )
            for scope in ("window", "lifetime")
        ),
        stat(
            "Predictions in scope",
            "How many test-then-train predictions the per-arm metrics rest on: the sliding window and the whole run.",
            [q(f"sum by (scope) ({sel('stream_ctr_arm_predictions')})", "{{scope}}")],
            "short",
            decimals=0,
        ),
        timeseries(
            "gAUC lift over global (ft, ft_lc)",
            "Does fine-tuning help ranking? gAUC of each fine-tuned arm minus the global model's, per "
            "scope; below zero it hurts. Differences of a few thousandths are the expected size.",
            [
                q(
                    f"avg by (arm, scope) ({FINE_TUNED_GAUC})\n"
                    f"  - on (scope) group_left\navg by (scope) ({sel(GAUC, arm='global')})",
                    "{{arm}} - global ({{scope}})",
                )
            ],
            "none",
            decimals=4,
        ),
        timeseries(
            "Logloss per arm",
            "Which arm is best calibrated? Online logloss per arm and scope. Label correction trades "
            "calibration to the user's own CTR for ranking, so ft_lc may lose logloss to ft while "
            "winning gAUC.",
            [q(f"avg by (arm, scope) ({sel('stream_ctr_arm_logloss')})", "{{arm}} ({{scope}})")],
            "none",
            decimals=3,
        ),
    )


def _ab_online_experiment() -> Row:
    return row(
        "Online experiment: served rankings per arm (POST /v1/score)",
        *_ab_outcome_panels(),
        *_ab_integrity_panels(),
    )


def _ab_outcome_panels() -> tuple[dict, ...]:
    """What each arm's served rankings got: clicks, traffic and the quality of the served scores."""
    return (
        timeseries(
            "CTR of served items per arm",
            "Which arm's rankings get clicked? Attributed clicks / attributed impressions per arm: "
            "events carrying the request_id of a ranking the arm served.",
            [
                q(
                    f"{per_arm_rate('stream_ctr_ab_clicks_total')} / {per_arm_rate('stream_ctr_ab_impressions_total')}",
                    "{{arm}}",
                )
            ],
            "percentunit",
            decimals=2,
        ),
        timeseries(
            "Scoring requests / s per arm",
            "How much traffic each arm serves: POST /v1/score requests per second per arm (users "
            "inside the experiment's coverage).",
            [q(per_arm_rate("stream_ctr_ab_requests_total"), "{{arm}}")],
            "reqps",
            min=0,
        ),
        timeseries(
            "Served-score quality per arm",
            "How good the scores each arm served were, on the events attributed to them: windowed "
            "gAUC, lifetime logloss and calibration (sum of scores over clicks; 1 = calibrated).",
            [
                q(f"avg by (arm) ({sel(f'stream_ctr_ab_{m}')})", f"{name} {{{{arm}}}}")
                for m, name in (("gauc", "gAUC"), ("logloss", "logloss"), ("calibration", "calibration"))
            ],
            "none",
            decimals=3,
        ),
    )


def _ab_integrity_panels() -> tuple[dict, ...]:
    """Whether the split can be trusted: users per arm, the sample-ratio check, and the events
    that could not be attributed."""
    return (
        stat(
            "Users per arm",
            "How many users each arm has served, counted once per arm: the units of the sample-ratio check.",
            [q(f"sum by (arm) ({sel('stream_ctr_ab_users_total')})", "{{arm}}")],
            "short",
            decimals=0,
        ),
        stat(
            "Sample-ratio p-value (min over workers)",
            "Can the A/B results be trusted? Always-valid (Dirichlet-multinomial) test of users per arm against the "
            "configured weights, safe to watch; below 0.001 the split is broken (alert StreamCtrSampleRatioMismatch).",
            [q(f"min({sel('stream_ctr_ab_srm_p_value')})", "p")],
            "none",
            decimals=4,
            thresholds=steps(("red", None), ("green", 0.001)),
        ),
        timeseries(
            "Unattributed events by reason",
            "Why events naming a request_id could not be attributed: unknown_request (another "
            "worker, a restart, or pushed out of the pending window), expired, item_not_served.",
            [q(f"sum by (reason) ({rate(sel('stream_ctr_ab_unattributed_total'))})", "{{reason}}")],
            "ops",
            w=24,
            min=0,
        ),
    )


def _difference_panel(metric: str, label: str, w: int) -> dict:
    name = f"stream_ctr_ab_{metric}_difference"
    return timeseries(
        f"{label} difference with control: always-valid and fixed-horizon",
        f"The {label} of each treatment arm minus the control's, on each worker's users (the randomised units: "
        "per-user delta method), with its always-valid 95% interval (always_valid_*: a confidence sequence, it "
        "holds at every reading, so it may be watched and stopped on once it excludes 0) and the fixed-horizon 95% "
        "interval (fixed_horizon_*: valid only when read once at the planned size; read continuously it lies). "
        "guardrail_* is the interval a guardrail decides on. Each worker's users are a disjoint sample: one line "
        "set per worker.",
        [
            q(sel(name, WORKER, 'bound!~"guardrail_.*"'), "{{arm}} {{bound}} ({{instance}})"),
            q(sel(name, WORKER, 'bound=~"guardrail_.*"'), "{{arm}} {{bound}} ({{instance}})"),
        ],
        "percentunit" if metric == "ctr" else "none",
        w=w,
        decimals=4,
    )


GUARDRAIL_STATES = mapping((-1, "waiting", "blue"), (0, "holding", "green"), (1, "BREACHED: stopped", "red"))
SERVING_STOPPED = mapping((0, "serving", "green"), (1, "STOPPED", "red"))


def _ab_live_inference() -> Row:
    return row(
        "Live always-valid intervals and guardrails",
        _difference_panel("ctr", "CTR", 12),
        _difference_panel("logloss", "Logloss", 12),
        stat(
            "Guardrail state per arm",
            "Is any arm harming a guarded metric? Per treatment arm and guardrail of the experiment file: waiting "
            "(too few users on a worker), holding, or BREACHED (its always-valid interval lies beyond the tolerance: "
            "the arm was stopped through ctr.experiments; alert StreamCtrGuardrailStoppedArm).",
            [q(f"max by (arm, guardrail) ({sel('stream_ctr_ab_guardrail_state')})", "{{arm}} {{guardrail}}")],
            "none",
            w=10,
            mappings=GUARDRAIL_STATES,
            thresholds=steps(("blue", None), ("green", 0), ("red", 1)),
        ),
        stat(
            "Stopped arms",
            "Which arms serve? An arm stopped (weight 0 on ctr.experiments, by a guardrail or stream-ctr ab stop) "
            "sends its users to the control arm until stream-ctr ab resume.",
            [q(f"max by (arm) ({sel('stream_ctr_ab_arm_stopped')})", "{{arm}}")],
            "none",
            w=7,
            mappings=SERVING_STOPPED,
            thresholds=steps(("green", None), ("red", 1)),
        ),
        stat(
            "Guardrail stops",
            "How many times a guardrail stopped each arm (summed over workers; a stop is published once, by the "
            "first worker that sees the breach).",
            [q(f"sum by (arm, guardrail) ({sel('stream_ctr_ab_guardrail_stops_total')})", "{{arm}} {{guardrail}}")],
            "short",
            w=7,
            decimals=0,
        ),
    )


def ab() -> dict:
    return dashboard(
        "ab.json",
        "Which arm wins? The shadow arms (every arm scores every event: global | ft | "
        "ft_lc) and the online experiment (each user served by one arm through POST /v1/score).",
        [
            _ab_shadow_arms(),
            _ab_online_experiment(),
            _ab_live_inference(),
        ],
    )


# --- files --------------------------------------------------------------------------------------------------------
