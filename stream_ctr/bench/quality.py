"""Progressive (test-then-train) prediction quality of the service, beside plain online learners on the same events.

The service's path runs in-process and deterministically (:mod:`stream_ctr.bench.lockstep`: the worker's step and the
trainer's deltas without the race between them), so a change can be judged by these numbers.

With ``live_rate``, the same events also go through the service as it runs: Kafka, the worker and the trainer
processes, replayed at that rate, each arm's progressive metrics read from the worker (a live row per arm).

The reference row scores each event by its user's past click rate, no model at all. The baselines are River
``LogisticRegression`` (SGD, step 0.05) over one-hot features: item id and every event
feature (multi-valued ones split), and the same with the user id and user x feature-value crosses. Every event
is scored before it is learned, by every learner.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from stream_ctr.bench.lockstep import lockstep
from stream_ctr.config import Settings
from stream_ctr.contracts.arms import ARMS
from stream_ctr.data import load_dataset
from stream_ctr.data.synthetic import FEATURES as SYNTHETIC_FEATURES
from stream_ctr.learning.correction import shrunk_ctr
from stream_ctr.learning.heads import HeadParams
from stream_ctr.quality.bootstrap import UserBootstrap, delta_cell
from stream_ctr.quality.metrics import auc, calibration, gauc, logloss, per_user_auc

__all__ = ["in_process_quality", "run_quality_bench"]


def run_quality_bench(
    settings: Settings,
    dataset: str,
    limit: int | None = None,
    cadences=(1000, 200, 8),
    families: tuple[str, ...] | None = None,
    corrections=(),
    live_rate: float | None = None,
) -> tuple[list[str], dict]:
    """Markdown lines and ``{learner: {auc, logloss, calibration, gauc, eps, model_bytes}}`` on ``dataset``, for
    each model family in ``families`` (default: the configured one) at each delta cadence in ``cadences``, and
    the ``ft_lc`` arm with each label-correction method in ``corrections`` (the configured family, the finest
    cadence)."""
    import river.linear_model  # noqa: F401  (imported before the clock starts)

    events = load_dataset(dataset, limit)
    if dataset == "synthetic":  # the events carry the synthetic world's features, not MovieLens'
        settings = settings.replace(features=SYNTHETIC_FEATURES)
    users = np.array([e.user_id for e in events], dtype=object)
    labels = np.array([e.label for e in events], dtype=np.float32)
    rows: dict[str, dict] = {}
    reference = _quality(users, labels, _past_click_rate(events))
    rows["user's past click rate (no model)"] = reference | {"eps": float("nan")}
    for crosses in (False, True):
        name = "river LR, one-hot" + (" + user crosses" if crosses else "")
        t0 = time.perf_counter()
        river_preds = _river_progressive(events, crosses)
        rows[name] = _quality(users, labels, river_preds) | {"eps": len(events) / (time.perf_counter() - t0)}
    for family in families or (settings.model_family,):
        for every in cadences:
            # A scorer's batch is scored by one model, so freshness within K samples needs batches of at most K.
            run = settings.replace(model_family=family, delta_every=every, batch_size=min(settings.batch_size, every))
            t0 = time.perf_counter()
            preds, published = _service_progressive(run, events)
            cost = {"eps": len(events) / (time.perf_counter() - t0), "model_bytes": published / len(events)}
            for arm in ARMS:
                rows[f"{family} {arm}, delta every {every:,}"] = _quality(users, labels, preds[arm]) | cost
    if live_rate is not None:
        rows |= _live_rows(settings, events, live_rate)
    for method in corrections:
        run = settings.replace(
            correction=method, delta_every=min(cadences), batch_size=min(settings.batch_size, min(cadences))
        )
        preds, _ = _service_progressive(run, events)
        paired = {f"vs_{arm}": _paired_gauc(users, labels, preds["ft_lc"], preds[arm]) for arm in ("ft", "global")}
        rows[f"{run.model_family} ft_lc with {method}, delta every {min(cadences):,}"] = (
            _quality(users, labels, preds["ft_lc"]) | {"eps": float("nan")} | paired
        )
    return _table(dataset, len(events), settings, rows), rows


def _live_rows(settings: Settings, events, rate: float) -> dict[str, dict]:
    """A row per arm: the events through a stack of its own (fresh topics) at ``rate`` events/s."""
    from stream_ctr.service.demo import replay_live  # the demo imports this module
    from stream_ctr.service.stack import Stack

    tag = f"bench-live-{time.time_ns() % 10**9}"
    logs = Path(tempfile.mkdtemp(prefix="stream-ctr-bench-live-"))
    with Stack(settings.replace(topic_prefix=f"{tag}.", app_id=tag), logs) as stack:
        stats, meta, _ = replay_live(stack, events, rate)
    speed = f"{rate:,.0f} events/s" if rate else "full speed"
    eps = stats["applied"] / meta["seconds"]
    return {
        f"service live ({speed}: Kafka, worker and trainer processes) {settings.model_family} {arm}": {
            k: stats["lifetime"]["arms"][arm][k] for k in ("auc", "logloss", "calibration", "gauc")
        }
        | {"eps": eps}
        for arm in ARMS
    }


def in_process_quality(settings: Settings, events) -> dict[str, dict]:
    """Per arm: AUC, logloss, calibration and gAUC of ``events`` through the service's code in lockstep."""
    users = np.array([e.user_id for e in events], dtype=object)
    labels = np.array([e.label for e in events], dtype=np.float32)
    preds, _ = _service_progressive(settings, events)
    return {arm: _quality(users, labels, p) for arm, p in preds.items()}


def _paired_gauc(users: np.ndarray, labels: np.ndarray, a: np.ndarray, b: np.ndarray) -> dict:
    """gAUC of ``a`` minus gAUC of ``b`` (the same events) with a 95% CI from a paired bootstrap over users."""

    _, auc_a, weights = per_user_auc(users, labels, a)
    _, auc_b, _ = per_user_auc(users, labels, b)  # the same users: both classes do not depend on the scores
    return UserBootstrap(weights, n_boot=1000, seed=0).estimate(auc_a - auc_b)


def _table(dataset: str, n: int, settings: Settings, rows: dict[str, dict]) -> list[str]:
    lines = [
        "",
        f"## Progressive quality on {dataset} ({n:,} events in time order, each scored before it is "
        f"learned; {settings.trainer_optimizer} step {settings.trainer_lr:g}, batch {settings.trainer_batch})",
        "",
        "| learner | AUC | logloss | calibration | gAUC | events/s | model topic bytes/event |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        cost = f"{r['model_bytes']:,.0f}" if "model_bytes" in r else "-"
        eps = "-" if np.isnan(r["eps"]) else f"{r['eps']:,.0f}"
        lines.append(
            f"| {name} | {r['auc']:.4f} | {r['logloss']:.4f} | {r['calibration']:.3f} | "
            f"{r['gauc']:.4f} | {eps} | {cost} |"
        )
    paired = {name: r for name, r in rows.items() if "vs_ft" in r}
    if paired:
        lines += [
            "",
            "gAUC of each label-corrected head minus the ft and the global arm on the same events, paired "
            "bootstrap over users (95% CI; * = the CI excludes 0):",
            "",
            "| learner | gAUC − ft [95% CI] | gAUC − global [95% CI] |",
            "|---|---|---|",
        ]
        lines += [f"| {name} | {delta_cell(r['vs_ft'])} | {delta_cell(r['vs_global'])} |" for name, r in paired.items()]
    return lines


def _quality(users: np.ndarray, labels: np.ndarray, preds: np.ndarray) -> dict:
    return {
        "auc": auc(labels, preds),
        "logloss": logloss(labels, preds),
        "calibration": calibration(labels, preds),
        "gauc": gauc(users, labels, preds),
    }


def _service_progressive(settings: Settings, events) -> tuple[dict[str, np.ndarray], int]:
    """Every arm's probability for every event, scored before the worker and the trainer learn it
    (:func:`~stream_ctr.bench.lockstep.lockstep`), and the bytes the trainer published to the model topics."""
    preds: dict[str, list[np.ndarray]] = {arm: [] for arm in ARMS}
    published = 0
    for step in lockstep(settings, events):
        order = {id(e): i for i, e in enumerate(step.result.events)}  # the step groups a batch by user
        _, _, arm_preds = step.result.arrays()
        back = np.array([order[id(e)] for e in step.batch])
        for arm in ARMS:
            preds[arm].append(arm_preds[arm][back])
        published += step.published
    return {arm: np.concatenate(p) for arm, p in preds.items()}, published


def _past_click_rate(events, shrinkage: float = HeadParams.shrinkage) -> np.ndarray:
    """Each event scored by its user's click rate before it, shrunk toward the click rate of all earlier events
    as the worker shrinks ``p_u`` (:func:`~stream_ctr.learning.correction.shrunk_ctr`): the reference that shows how
    much of pooled AUC is knowing each user's prior (and, in gAUC, the negative bias of a score that follows the
    user's own recent labels)."""
    seen: dict[str, tuple[int, int]] = {}
    clicks = total = 0
    out = np.empty(len(events), dtype=np.float32)
    for i, event in enumerate(events):
        c, n = seen.get(event.user_id, (0, 0))
        out[i] = shrunk_ctr(c, n, (clicks + 0.5) / (total + 1), shrinkage)
        seen[event.user_id] = (c + event.label, n + 1)
        clicks, total = clicks + event.label, total + 1
    return out


def _one_hot(event, crosses: bool) -> dict[str, float]:
    x = {f"item={event.item_id}": 1.0}
    values = [f"{k}={v}" for k, raw in event.features.items() for v in str(raw).split("|") if v]
    x.update(dict.fromkeys(values, 1.0))
    if crosses:
        x[f"user={event.user_id}"] = 1.0
        x.update({f"user={event.user_id}&{v}": 1.0 for v in values})
    return x


def _river_progressive(events, crosses: bool) -> np.ndarray:
    from river import linear_model, optim

    model = linear_model.LogisticRegression(optimizer=optim.SGD(0.05))
    out = np.empty(len(events), dtype=np.float32)
    for i, event in enumerate(events):
        x = _one_hot(event, crosses)
        out[i] = model.predict_proba_one(x).get(True, 0.5)
        model.learn_one(x, bool(event.label))
    return out
