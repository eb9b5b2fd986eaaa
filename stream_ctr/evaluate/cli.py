"""``stream-ctr evaluate``: the offline reproduction (docs/EVALUATION.md), as an argparse subcommand.

``add_parser(subparsers)`` registers the command; ``run(args)`` returns the exit code: 0 done, 2 bad input
(unknown model, missing column, labels not 0/1, nothing to evaluate, ...), reported in one line on stderr.

>>> import argparse
>>> p = argparse.ArgumentParser(); s = p.add_subparsers(); _ = add_parser(s)
>>> a = p.parse_args(["evaluate", "--dataset", "synthetic", "--models", "lr,fm", "--out", "/tmp/x"])
>>> a.models, a.modes, a.scope, a.func is run
('lr,fm', 'cloud,ft,ft_lc,ft_reweight,ft_logit,ft_lc_evidence,ft_lc_significant,ft_lc_bias,ft_auto', 'head', True)
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from stream_ctr.evaluate.config import DEFAULT_MODES, GLOBAL_TRAINING, MODES, CloudConfig
from stream_ctr.evaluate.split import PG, Protocol
from stream_ctr.learning.correction import LC_VARIANTS

__all__ = ["add_parser", "run"]


def _csv(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "evaluate",
        help="offline reproduction: model families x {cloud, ft, ft_lc, ...} on a dataset",
        description="Cloud model on every user's early events, per-user fine-tuning on the next ones (tuned on a "
        "validation split), everything tested on each user's last events. Writes results.json, "
        "results.md and PNG plots to --out.",
    )
    p.add_argument("--dataset", required=True, help="ml-100k | synthetic | PATH to a .csv/.tsv/.parquet file")
    p.add_argument("--models", default="lr,fm,wd,deepfm,dcn", help="comma-separated model families")
    p.add_argument(
        "--modes",
        default=",".join(DEFAULT_MODES),
        help="comma-separated modes (cloud is always included; ft_lc_bias runs in the head scope only); also "
        "the companion methods: ft_ode, ft_lc_ode, ft_fifo, ft_lc_fifo, ft_reservoir, ft_lc_reservoir (a "
        "buffer of --buffer-k samples), ft_coda, ft_lc_coda (augmentation from a pool of --pool-size events)",
    )
    p.add_argument("--scope", default="head", help="head | full | head,full")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--seeds",
        default=None,
        help="comma-separated seeds, e.g. 0,1,2,3,4: one run per seed (each in DIR/seed-N) and a summary "
        "with CIs over users and seeds in DIR (overrides --seed)",
    )
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument(
        "--features",
        default=None,
        help="feature columns and kinds for a file, e.g. 'age,gender,genres:multi:6,price:num' (default: inferred)",
    )
    p.add_argument(
        "--no-user-id",
        action="store_true",
        help="keep the user id out of the model's features (the paper's shared cloud model)",
    )
    _add_companion_args(p.add_argument_group("companions (ODE, CoDA) and global training (FedAvg, FedSubAvg)"))
    _add_synthetic_args(p.add_argument_group("synthetic data (--dataset synthetic)"))
    _add_protocol_args(p.add_argument_group("protocol and run"))
    p.set_defaults(func=run)
    return p


def _add_companion_args(group) -> None:
    """The k-sample buffers, CoDA's pool and how the global model is trained."""
    from stream_ctr.evaluate.companions import CompanionConfig

    group.add_argument(
        "--global-training",
        default="centralized",
        help=f"comma-separated, from {'|'.join(GLOBAL_TRAINING)}: the first trains the global model every mode "
        "builds on (pooled samples, or per-user submodel updates averaged by FedAvg or FedSubAvg); the others "
        "are trained too and scored as rows global_<how> on the same users",
    )
    group.add_argument("--fed-rounds", type=int, default=150, help="federated rounds (50 clients each)")
    group.add_argument(
        "--buffer-k", type=int, default=CompanionConfig.buffer_k, help="samples in a user's ODE/FIFO/reservoir buffer"
    )
    group.add_argument(
        "--pool-size", type=int, default=CompanionConfig.pool_size, help="CoDA's pool of training-period events"
    )


def _add_synthetic_args(group) -> None:
    """What only the synthetic world takes: its drift, a change over time, the regime map."""
    group.add_argument("--drift", type=float, default=None, help="synthetic only: std of users' prior logits")
    group.add_argument(
        "--change",
        default=None,
        help="synthetic only: a change of the world over time, KIND:AT:SIZE[:OVER], e.g. ramp:0.3:1.5:0.5 "
        "(every prior logit +1.5, ramped in from 30%% to 80%% of the time span; jump, ramp or flip)",
    )
    group.add_argument(
        "--regimes",
        action="store_true",
        help="synthetic only: the regime map, sweeping prior gap, taste, events per user and a global "
        "ramp around a small base world (stream_ctr.evaluate.regimes), each world over --seeds; "
        "writes DIR/regimes.json, regimes.md, regimes*.png",
    )


def _add_protocol_args(group) -> None:
    """How the split, the correction's p_g, the samples, the cloud model and the run are set."""
    group.add_argument(
        "--pg",
        default="aligned",
        choices=PG,
        help="the global CTR correction aligns to: aligned (default: the running click share of all events "
        "up to each user's fine-tuning step, as in the service) or cloud (click share of the cloud "
        "part, as the earliest result tables under docs/results used)",
    )
    group.add_argument("--max-users", type=int, default=None, help="evaluate a seeded sample of this many users")
    group.add_argument(
        "--full-users",
        type=int,
        default=200,
        help="users in the full scope's seeded sample (0 = all); the full scope's cloud row uses it too",
    )
    group.add_argument("--max-epochs", type=int, default=CloudConfig.max_epochs, help="cloud model epochs (early stop)")
    group.add_argument(
        "--min-events", type=int, default=Protocol.min_events, help="users with fewer events are skipped (counted)"
    )
    group.add_argument("--threads", type=int, default=1, help="torch threads (tiny per-user tensors: 1 is fastest)")
    group.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the CIs")
    group.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    group.add_argument("--no-progress", action="store_true", help="no progress bar")


def _fail(msg: str) -> int:
    print(f"stream-ctr evaluate: error: {msg}", file=sys.stderr)
    return 2


def _config(args):
    from stream_ctr.evaluate.companions import CompanionConfig
    from stream_ctr.evaluate.experiment import EvalConfig
    from stream_ctr.evaluate.federated import FederatedConfig

    scopes = _csv(args.scope)
    if (args.drift is not None or args.change is not None or args.regimes) and args.dataset != "synthetic":
        raise ValueError("--drift, --change and --regimes apply to --dataset synthetic only")
    cfg = EvalConfig(
        models=_csv(args.models),
        modes=tuple(dict.fromkeys(("cloud",) + _csv(args.modes))),
        scopes=scopes,
        seed=args.seed,
        cloud=CloudConfig(max_epochs=args.max_epochs),
        protocol=Protocol(min_events=args.min_events),
        n_boot=args.bootstrap,
        max_users=args.max_users,
        full_max_users=args.full_users or None,
        progress=not args.no_progress,
        threads=args.threads,
        pg=args.pg,
        companions=CompanionConfig(buffer_k=args.buffer_k, pool_size=args.pool_size),
        global_training=_csv(args.global_training),
        federated=FederatedConfig(rounds=args.fed_rounds),
    )
    if not cfg.models or not scopes:
        raise ValueError("--models and --scope must name at least one entry")
    return cfg


def _change(text: str | None) -> dict | None:
    """``--change KIND:AT:SIZE[:OVER]`` as the synthetic generator's ``change`` setting."""
    if text is None:
        return None
    from stream_ctr.data.synthetic import Change

    kind, *nums = text.split(":")
    try:
        values = [float(x) for x in nums]
        if not 1 <= len(values) <= 3:
            raise ValueError("give AT, SIZE and optionally OVER")
        at = values[0]
        size = values[1] if len(values) > 1 else Change.size
        over = values[2] if len(values) > 2 else Change.over
        return {"change": Change(kind, at, size, over)}
    except ValueError as exc:
        raise ValueError(f"--change must be KIND:AT:SIZE[:OVER] (jump, ramp or flip), got {text!r}: {exc}") from None


def _seeds(args) -> list[int] | None:
    if args.seeds is None:
        return None
    try:
        seeds = [int(s) for s in _csv(args.seeds)]
    except ValueError:
        raise ValueError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError("--seeds must name at least one seed, each once")
    return seeds


def run(args) -> int:
    from stream_ctr.data.table import TableError  # heavy imports (torch, pandas) only when the command runs
    from stream_ctr.evaluate.datasets import load

    command = (
        "stream-ctr evaluate " + " ".join(shlex.quote(a) for a in sys.argv[2:])
        if len(sys.argv) > 1 and sys.argv[1] == "evaluate"
        else ""
    )

    def load_seed(seed: int):
        events, spec, _ = load(
            args.dataset,
            seed=seed,
            drift=args.drift,
            features=args.features,
            user_id=not args.no_user_id,
            synthetic=change,
        )
        return events, spec

    try:
        cfg, seeds, change = _config(args), _seeds(args), _change(args.change)
        if args.regimes:
            return _run_regimes(args, cfg, seeds or [args.seed], command)
        if seeds is not None:
            return _run_seeds(args, cfg, seeds, load_seed, command)
        t0 = time.perf_counter()
        result = _experiment(cfg, load_seed(args.seed), args.dataset)
    except (TableError, ValueError, FileNotFoundError) as exc:
        return _fail(str(exc))
    result.meta["wall_s"] = round(time.perf_counter() - t0, 1)
    written = _write_one(args, args.out, result, command)
    print(written[1].read_text())
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _experiment(cfg, loaded: tuple, dataset: str):
    from stream_ctr.evaluate.experiment import run_experiment

    events, spec = loaded
    return run_experiment(events, spec, cfg, dataset=dataset)


def _write_one(args, out: Path, result, command: str) -> list[Path]:
    """results.json, results.md and (unless --no-plots) the PNGs of one seed's run, in ``out``."""
    from stream_ctr.evaluate.plots import plot_drift_harm, plot_local_ctr
    from stream_ctr.evaluate.report import write_results

    written = list(write_results(out, result.dataset, result.rows, result.meta, command))
    written += _write_comparisons(out, [result], result.meta["n_boot"], command)
    if not args.no_plots:
        written.append(
            plot_local_ctr(
                out / "local_ctr.png",
                result.local_ctr,
                result.meta["global_ctr"],
                f"{args.dataset}: local CTR of {len(result.local_ctr)} users",
            )
        )
        for scope, pu in result.per_user.items():
            written.append(plot_drift_harm(out / f"drift_harm_{scope}.png", pu.drift, pu.auc, scope))
    return written


def _run_seeds(args, cfg, seeds: list[int], load_seed, command: str) -> int:
    """One run per seed (written to DIR/seed-N as it finishes), then the summary over seeds in DIR."""
    from stream_ctr.evaluate.report import write_seeds
    from stream_ctr.evaluate.seeds import run_seeds

    t0 = time.perf_counter()
    ms = run_seeds(
        load_seed, cfg, seeds, args.dataset, on_seed=lambda s, r: _write_one(args, args.out / f"seed-{s}", r, command)
    )
    meta = {"wall_s": round(time.perf_counter() - t0, 1), "n_boot": cfg.n_boot, "pg": cfg.pg}
    per_seed = [{"seed": s, "rows": r.rows, "meta": r.meta} for s, r in zip(ms.seeds, ms.results)]
    js, md = write_seeds(args.out, ms.dataset, ms.seeds, ms.rows, per_seed, meta, command)
    _write_comparisons(args.out, ms.results, cfg.n_boot, command)
    print(md.read_text())
    print(f"wrote {js}, {md} and {len(seeds)} seed folders")
    return 0


def _write_comparisons(out: Path, results: list, n_boot: int, command: str) -> list[Path]:
    """comparisons.json and comparisons.md (the companions' paired differences, by activity bucket) when the run has
    companion modes or several global models; nothing otherwise."""
    import json

    from stream_ctr.evaluate.comparisons import compare, comparisons_table
    from stream_ctr.evaluate.report import _clean

    rows = compare(results, n_boot)
    if not rows:
        return []
    out.mkdir(parents=True, exist_ok=True)
    seeds = [r.meta["seed"] for r in results]
    text = [
        f"# Companions (ODE, CoDA, FedSubAvg): {results[0].dataset}, seeds {seeds}",
        "",
        "```",
        command,
        "```",
        "",
        "Paired differences of per-user test AUC (gAUC weighting), mode − base; 95% CIs over users"
        + (" and seeds (two-level bootstrap)" if len(results) > 1 else "")
        + "; * = the CI excludes 0. Buckets: terciles of users' fine-tune event counts (cold = fewest).",
        f"Companion settings: {results[0].meta.get('companions')}; global training: "
        f"{results[0].meta.get('global_training')}, federated {results[0].meta.get('federated')}.",
        "",
        comparisons_table(rows),
        "",
    ]
    (out / "comparisons.json").write_text(json.dumps(_clean({"rows": rows, "command": command}), indent=2) + "\n")
    (out / "comparisons.md").write_text("\n".join(text))
    return [out / "comparisons.json", out / "comparisons.md"]


def _run_regimes(args, cfg, seeds: list[int], command: str) -> int:
    """The regime map: every world of stream_ctr.evaluate.regimes over ``seeds``, written to DIR."""
    import json

    from stream_ctr.evaluate.regimes import AXES, BASE, plot_regimes, regimes_table, run_regimes
    from stream_ctr.evaluate.report import _clean

    t0 = time.perf_counter()

    def done(axis, value, _):
        print(f"{axis}={value}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)

    rows = run_regimes(cfg, seeds, on_world=done)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {
        "seeds": seeds,
        "base": {k: v for k, v in vars(BASE).items() if k != "seed"},
        "axes": AXES,
        "pg": cfg.pg,
        "wall_s": round(time.perf_counter() - t0, 1),
        "command": command,
    }
    (args.out / "regimes.json").write_text(json.dumps(_clean({"rows": rows, "meta": meta}), indent=2) + "\n")
    table = regimes_table(rows)
    text = [
        "# Regime map (synthetic generator)",
        "",
        "```",
        command,
        "```",
        "",
        f"Base world {meta['base']}; one axis at a time. Seeds {seeds} (each draws a new world); means over "
        "seeds, 95% CIs over users and seeds (two-level bootstrap); * = CI excludes 0. "
        f"Wall time {meta['wall_s']} s.",
        "",
        table,
        "",
    ]
    (args.out / "regimes.md").write_text("\n".join(text))
    written = [
        plot_regimes(args.out / f"regimes_{m}.png", rows, m) for m in cfg.modes if MODES.get(m) in LC_VARIANTS
    ]  # one plot per label-correction mode
    print(table)
    print("wrote " + ", ".join(str(p) for p in [args.out / "regimes.json", args.out / "regimes.md", *written]))
    return 0
