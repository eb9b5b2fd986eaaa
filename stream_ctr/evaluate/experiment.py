"""One offline experiment: model families x modes x scopes on one dataset, scored on each user's test part.

For each family the cloud model is trained once (seeded) and frozen; ``cloud`` scores the test part with it, and
each fine-tuning mode (``ft``, ``ft_lc``, ``ft_reweight``, ``ft_logit`` = correction ``none``, ``lc``,
``reweight``, ``logit``) is tuned on the validation split and refit per user (:mod:`.tuning`), in each scope.
The ``full`` scope may run on a seeded random subset of users (``full_max_users``); its ``cloud`` row is scored on
the same subset, so every comparison stays paired.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from tqdm.auto import tqdm

from stream_ctr.evaluate.cloud import train_cloud
from stream_ctr.evaluate.companions import CompanionConfig, Selector, buffer_bytes
from stream_ctr.evaluate.config import COMPANIONS, DEFAULT_MODES, GLOBAL_TRAINING, MODES, CloudConfig
from stream_ctr.evaluate.federated import FederatedConfig, train_federated
from stream_ctr.evaluate.finetune import SCOPES, FullScope, HeadScope
from stream_ctr.evaluate.split import PG, Protocol, SplitData, split_events
from stream_ctr.evaluate.tuning import FULL_GRID, HEAD_GRID, Choice, Grid, tune_and_fit
from stream_ctr.learning.correction import LC_VARIANTS, shrunk_ctr
from stream_ctr.learning.heads import HeadParams, sigmoid
from stream_ctr.models import FAMILIES, infer
from stream_ctr.quality.auto import choose
from stream_ctr.quality.bootstrap import UserBootstrap
from stream_ctr.quality.metrics import auc, calibration, logloss, per_user_auc

__all__ = ["EvalConfig", "MODES", "Result", "run_experiment"]

#: Mode -> correction method (``cloud`` is not fine-tuned).


@dataclass(frozen=True)
class EvalConfig:
    models: tuple[str, ...] = tuple(FAMILIES)
    modes: tuple[str, ...] = DEFAULT_MODES
    scopes: tuple[str, ...] = ("head",)
    seed: int = 0
    cloud: CloudConfig = CloudConfig()
    protocol: Protocol = Protocol()
    shrinkage: float = HeadParams.shrinkage  # pseudo-events pulling p_u toward p_g (the service's default)
    n_boot: int = 1000
    max_users: int | None = None  # evaluate at most this many users (seeded sample); None = all
    full_max_users: int | None = 200  # the full scope's user sample; None = all evaluated users
    head_grid: Grid = HEAD_GRID
    full_grid: Grid = FULL_GRID
    progress: bool = True
    # torch threads while the experiment runs: its tensors are tiny (a user's few dozen events), where extra
    # threads only add synchronisation; on a busy 2-core machine 1 thread was 5-30x faster than 2.
    threads: int = 1
    # The global CTR correction aligns to: "cloud" (the cloud part's click share) or "aligned" (the running CTR
    # of all events up to the fine-tuning step, as the service has it); see SplitData.priors.
    pg: str = "aligned"  # the service's definition; as good or better on every run (README)
    companions: CompanionConfig = CompanionConfig()  # buffer k, CoDA's pool
    # How the global model is trained: the first entry is the model every mode builds on; the others are trained
    # too and scored as extra rows ``global_<how>`` on the same users (paired with ``cloud``).
    global_training: tuple[str, ...] = ("centralized",)
    federated: FederatedConfig = FederatedConfig()

    def __post_init__(self):
        if self.pg not in PG:
            raise ValueError(f"unknown p_g definition {self.pg!r}; choose from {list(PG)}")
        bad = [m for m in self.models if m not in FAMILIES]
        if bad:
            raise ValueError(f"unknown model(s) {bad}; choose from {sorted(FAMILIES)}")
        bad = [m for m in self.modes if m not in MODES]
        if bad:
            raise ValueError(f"unknown mode(s) {bad}; choose from {list(MODES)}")
        if "ft_auto" in self.modes and "ft" not in self.modes:
            raise ValueError("ft_auto chooses between ft and the label-correction modes: add ft to the modes")
        bad = [g for g in self.global_training if g not in GLOBAL_TRAINING]
        if bad or not self.global_training or len(set(self.global_training)) != len(self.global_training):
            raise ValueError(f"--global-training: name each of {list(GLOBAL_TRAINING)} at most once, got {bad}")
        bad = [s for s in self.scopes if s not in SCOPES]
        if bad:
            raise ValueError(f"unknown scope(s) {bad}; choose from {list(SCOPES)}")


@dataclass
class ScopeUsers:
    """Per-user material for plots and for pooling seeds: users with both classes in test, their test
    impressions (the gAUC weight), their |p_u - p_g| and AUC per mode."""

    users: list[str]
    weights: np.ndarray
    drift: np.ndarray
    activity: np.ndarray  # the user's fine-tune events (fit + val): how much local data it has
    auc: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # model -> mode -> per-user AUC


@dataclass
class Result:
    dataset: str
    rows: list[dict]
    meta: dict
    local_ctr: np.ndarray  # per evaluated user: click share over all of the user's events
    per_user: dict[str, ScopeUsers]  # scope -> per-user material


def _sample(data: SplitData, n: int | None, seed: int) -> SplitData:
    if n is None or n >= len(data.evaluated):
        return data
    keep = np.random.default_rng(seed).choice(len(data.evaluated), size=n, replace=False)
    return data.subset(keep)


def _drift(data: SplitData, p_g: float, shrinkage: float) -> np.ndarray:
    out = []
    for k in range(len(data.evaluated)):
        y = data.labels[data.ft(k)]
        out.append(abs(shrunk_ctr(float(y.sum()), len(y), p_g, shrinkage) - p_g))
    return np.array(out)


def run_experiment(events, spec, cfg: EvalConfig, dataset: str = "") -> Result:
    """Run every (model, scope, mode) of ``cfg`` on ``events``; returns rows and per-user material."""
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _run(events, spec, cfg, dataset)
    finally:
        torch.set_num_threads(threads)


def _run(events, spec, cfg: EvalConfig, dataset: str) -> Result:
    t_start = time.perf_counter()
    data = _sample(split_events(events, spec, cfg.protocol), cfg.max_users, cfg.seed)
    p_g = data.global_ctr
    scoped = {s: (_sample(data, cfg.full_max_users, cfg.seed + 1) if s == "full" else data) for s in cfg.scopes}
    ft_modes = [m for m in cfg.modes if m != "cloud"]
    per_user, boots, test_sets = _scope_material(scoped, p_g, cfg)
    rows, timings, epochs = [], {}, {}
    steps = len(cfg.models) * (1 + sum(len(_scope_modes(s, ft_modes)) for s in cfg.scopes))
    bar = tqdm(total=steps, desc=f"evaluate {dataset}", disable=not cfg.progress, leave=False)
    torch.manual_seed(cfg.seed)
    for family in cfg.models:
        bar.set_postfix_str(f"{family} cloud")
        t0 = time.perf_counter()
        models = {how: _global_model(data, family, cfg, how) for how in cfg.global_training}
        model, epochs[family] = models[cfg.global_training[0]]
        g, h = infer(model, data.ids, data.vals)
        timings[f"{family}/cloud"] = round(time.perf_counter() - t0, 2)
        bar.update(1)
        selectors = {kind: Selector(kind, g, h, cfg.companions, cfg.seed) for kind in set(COMPANIONS.values())}
        for s, d in scoped.items():
            test_idx, users, labels = test_sets[s]
            cloud = sigmoid(g[test_idx])
            runner = HeadScope(g, h) if s == "head" else FullScope(model, data.ids, data.vals)
            modes = _scope_modes(s, ft_modes)
            preds, choices = _fine_tune(family, s, d, runner, cloud, modes, cfg, bar, timings, selectors)
            for how in cfg.global_training[1:]:  # the other global models, scored on the same users
                preds[f"global_{how}"] = sigmoid(infer(models[how][0], data.ids[test_idx], data.vals[test_idx])[0])
            rows += _score(family, s, preds, choices, users, labels, boots[s], per_user[s])
    bar.close()
    meta = _meta(cfg, data, scoped, p_g, epochs, timings, t_start)
    local = np.array([data.labels[data.user == c].mean() for c in data.evaluated])
    return Result(dataset, rows, meta, local, per_user)


def _global_model(data: SplitData, family: str, cfg: EvalConfig, how: str):
    """(model, epochs or rounds kept): the global model trained on pooled samples or by federated rounds."""
    if how == "centralized":
        return train_cloud(data, family, cfg.cloud, cfg.seed)
    return train_federated(data, family, cfg.cloud, how, cfg.seed, cfg.federated)


def _scope_material(scoped: dict[str, SplitData], p_g: float, cfg: EvalConfig) -> tuple[dict, dict, dict]:
    """Per scope: the users with both classes in test (:class:`ScopeUsers`), the bootstrap over them, and the test
    part ``(event indices, users, labels)``."""
    per_user, boots, test_sets = {}, {}, {}
    for s, d in scoped.items():
        test_idx = np.concatenate(d.test)
        users, labels = d.user[test_idx], d.labels[test_idx]
        u, _, n = per_user_auc(users, labels, np.zeros(len(labels)))  # which users have both classes
        pos = np.searchsorted(d.evaluated, u)
        activity = np.array([len(d.ft(k)) for k in range(len(d.evaluated))])[pos]
        per_user[s] = ScopeUsers([d.user_names[c] for c in u], n, _drift(d, p_g, cfg.shrinkage)[pos], activity)
        boots[s] = UserBootstrap(n, cfg.n_boot, cfg.seed)
        test_sets[s] = (test_idx, users, labels)
    return per_user, boots, test_sets


def _fine_tune(
    family: str,
    scope: str,
    d: SplitData,
    runner,
    cloud,
    modes: list[str],
    cfg: EvalConfig,
    bar,
    timings: dict,
    selectors: dict[str, Selector],
) -> tuple[dict, dict[str, Choice]]:
    """Test predictions of ``cloud`` (given) and of each of ``modes`` (tuned on validation with ``runner``, then
    refit per user; a companion mode trains on what its selector gives), and each mode's choice; each mode's
    seconds go to ``timings``, its step to the progress bar."""
    preds = {"cloud": cloud}
    choices: dict[str, Choice] = {}
    grid = cfg.head_grid if scope == "head" else cfg.full_grid
    for mode in modes:
        bar.set_postfix_str(f"{family} {scope} {mode}")
        t0 = time.perf_counter()
        if mode == "ft_auto":
            pick = pick_auto(choices)
            preds[mode], choices[mode] = preds[pick], replace(choices[pick], pick=pick)
        else:
            method = MODES[mode]
            assert method is not None, "only cloud has no method, and ft_modes leave it out"
            select = selectors[COMPANIONS[mode]] if mode in COMPANIONS else None
            preds[mode], choices[mode] = tune_and_fit(runner, d, method, grid, cfg.shrinkage, cfg.pg, select)
        timings[f"{family}/{scope}/{mode}"] = round(time.perf_counter() - t0, 2)
        bar.update(1)
    return preds, choices


def _meta(
    cfg: EvalConfig, data: SplitData, scoped: dict[str, SplitData], p_g: float, epochs, timings, t_start: float
) -> dict:
    """The run's settings and facts: the data's sizes, the configuration, cloud epochs and timings."""
    return {
        "seed": cfg.seed,
        "global_ctr": p_g,
        "n_events": int(len(data.labels)),
        "n_users_evaluated": int(len(data.evaluated)),
        "skipped_users": int(data.skipped_users),
        "users_per_scope": {s: int(len(d.evaluated)) for s, d in scoped.items()},
        "protocol": vars(cfg.protocol) | {},
        "cloud": {**vars(cfg.cloud), "hidden": list(cfg.cloud.hidden)},
        "shrinkage": cfg.shrinkage,
        "pg": cfg.pg,
        "n_boot": cfg.n_boot,
        "torch_threads": cfg.threads,
        "grids": {s: vars(cfg.head_grid if s == "head" else cfg.full_grid) for s in cfg.scopes},
        "companions": {
            **vars(cfg.companions),
            "buffer_bytes_per_user": buffer_bytes(cfg.companions.buffer_k, data.spec.n_slots),
            "pool_events": int(min(cfg.companions.pool_size, len(data.cloud_idx))),
        },
        "global_training": list(cfg.global_training),
        "federated": vars(cfg.federated),
        "pg_aligned": _quantiles(data.priors([data.ft(k) for k in range(len(data.evaluated))], "aligned")),
        "cloud_epochs": epochs,
        "timings_s": timings,
        "total_s": round(time.perf_counter() - t_start, 1),
    }


def _quantiles(x: np.ndarray) -> dict:
    """Min, median and max of the time-aligned p_g over users (how far it strays from the cloud part's)."""
    return {"min": float(x.min()), "median": float(np.median(x)), "max": float(x.max())}


def _scope_modes(scope: str, modes: list[str]) -> list[str]:
    """The fine-tuning modes a scope runs, ``ft_auto`` last (it picks among the others): ``lc_bias`` trains a
    head's bias apart from its weights, so the full scope (a whole per-user model, no head) does not run it."""
    kept = [m for m in modes if scope == "head" or MODES[m] != "lc_bias"]
    return [m for m in kept if m != "ft_auto"] + [m for m in kept if m == "ft_auto"]


def pick_auto(choices: dict[str, Choice]) -> str:
    """``ft_auto``'s mode: ``ft`` unless a label-correction or companion mode's per-user validation AUC beats
    ``ft``'s with a CI above 0 (:func:`stream_ctr.quality.auto.choose`, paired over the users with both classes in
    validation)."""
    ft = choices["ft"]
    diffs, weights = {}, {}
    for mode, c in choices.items():
        if MODES.get(mode) not in LC_VARIANTS and mode not in COMPANIONS:
            continue
        common, i, j = np.intersect1d(ft.val_users, c.val_users, return_indices=True)
        diffs[mode], weights[mode] = c.val_auc[j] - ft.val_auc[i], ft.val_n[i]
    return choose("ft", diffs, weights).method


def _score(family, scope, preds, choices, users, labels, boot: UserBootstrap, pu: ScopeUsers) -> list[dict]:
    per = {m: per_user_auc(users, labels, p)[1] for m, p in preds.items()}
    pu.auc[family] = per
    rows = []
    for mode, p in preds.items():
        row = {
            "model": family,
            "mode": mode,
            "scope": scope,
            "gauc": boot.mean(per[mode]),
            "gauc_ci": list(boot.ci(per[mode])),
            "auc": auc(labels, p),
            "logloss": logloss(labels, p),
            "calibration": calibration(labels, p),
            "n_users": int(len(per[mode])),
        }
        if mode != "cloud":
            d = per[mode] - per["cloud"]
            row["vs_cloud"] = {"delta": boot.mean(d), "ci": list(boot.ci(d))}
        if mode in choices:
            c = choices[mode]
            row["chosen"] = {
                "lr": c.lr,
                "l2": c.l2,
                "steps": c.steps,
                "val_gauc": c.val_gauc,
                **({"pick": c.pick} if c.pick else {}),
            }
        if mode == "ft_lc" and "ft" in per:
            d = per["ft_lc"] - per["ft"]
            row["vs_ft"] = {"delta": boot.mean(d), "ci": list(boot.ci(d))}
        rows.append(row)
    return rows
