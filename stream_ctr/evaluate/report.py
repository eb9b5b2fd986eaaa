"""Writing an experiment out: ``results.json`` (machine-readable) and ``results.md`` (the table).

``results.json`` = ``{"dataset": ..., "rows": [...], "meta": {...}}``; each row has ``model, mode, scope, gauc,
gauc_ci [lo, hi], auc, logloss, calibration, n_users`` and, for fine-tuned modes, ``vs_cloud`` (paired gAUC
difference and its CI), ``chosen`` (the validated lr, l2, steps); ``ft_lc`` rows also carry ``vs_ft``.

>>> row = {"model": "lr", "mode": "cloud", "scope": "head", "gauc": 0.7, "gauc_ci": [0.69, 0.71], "auc": 0.75,
...        "logloss": 0.6, "calibration": 1.0, "n_users": 10}
>>> markdown_table([row]).splitlines()[2]
'| lr | head | cloud | 0.7000 [0.6900, 0.7100] |  |  | 0.7500 | 0.6000 | 1.000 | 10 |  |'
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from stream_ctr.quality.bootstrap import delta_cell

__all__ = ["markdown_table", "seeds_table", "write_results", "write_seeds"]


def _f(x, digits: int = 4) -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def markdown_table(rows: list[dict]) -> str:
    """One line per (model, scope, mode); ``*`` marks a paired 95% CI that excludes zero."""
    head = (
        "| model | scope | mode | gAUC [95% CI] | Δ vs cloud [95% CI] | Δ ft_lc vs ft [95% CI] | AUC | logloss "
        "| calibration | users | lr / l2 / steps |"
    )
    lines = [head, "|" + "|".join(["---"] * 11) + "|"]
    for r in rows:
        c = r.get("chosen")
        chosen = f"{c['lr']:g} / {c['l2']:g} / {c['steps']}" if c else ""
        chosen += f" ({c['pick']})" if c and c.get("pick") else ""
        lo, hi = r["gauc_ci"]
        lines.append(
            f"| {r['model']} | {r['scope']} | {r['mode']} | {_f(r['gauc'])} [{_f(lo)}, {_f(hi)}] "
            f"| {delta_cell(r.get('vs_cloud'))} | {delta_cell(r.get('vs_ft'))} | {_f(r['auc'])} "
            f"| {_f(r['logloss'])} | {_f(r['calibration'], 3)} | {r['n_users']} | {chosen} |"
        )
    return "\n".join(lines)


def _seed_signs(d: dict | None) -> str:
    if not d or not d.get("per_seed"):
        return ""
    return f"{sum(x > 0 for x in d['per_seed'])}/{len(d['per_seed'])}"


def seeds_table(rows: list[dict]) -> str:
    """The multi-seed summary: one line per (model, scope, mode), means over seeds with two-level 95% CIs
    (``*`` = the CI excludes 0); "ft < mode" counts the seeds whose own difference to ``ft`` is positive."""
    head = (
        "| model | scope | mode | gAUC [95% CI] | Δ vs cloud [95% CI] | Δ vs ft [95% CI] | seeds ft < mode "
        "| logloss | calibration | users | auto's picks |"
    )
    lines = [head, "|" + "|".join(["---"] * 11) + "|"]
    for r in rows:
        lo, hi = r["gauc_ci"]
        lines.append(
            f"| {r['model']} | {r['scope']} | {r['mode']} | {_f(r['gauc'])} [{_f(lo)}, {_f(hi)}] "
            f"| {delta_cell(r.get('vs_cloud'))} | {delta_cell(r.get('vs_ft'))} | {_seed_signs(r.get('vs_ft'))} "
            f"| {_f(r['logloss'])} | {_f(r['calibration'], 3)} | {r['n_users']:.0f} "
            f"| {', '.join(r.get('picks', []))} |"
        )
    return "\n".join(lines)


def _clean(x):
    """JSON without NaN (``null`` instead), numpy scalars as Python numbers."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def write_results(out: Path, dataset: str, rows: list[dict], meta: dict, command: str = "") -> tuple[Path, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    js = out / "results.json"
    js.write_text(
        json.dumps(_clean({"dataset": dataset, "rows": rows, "meta": {**meta, "command": command}}), indent=2) + "\n"
    )
    md = out / "results.md"
    text = [f"# Offline evaluation: {dataset}", ""]
    if command:
        text += ["```", command, "```", ""]
    text += [
        f"Global CTR p_g = {meta.get('global_ctr', float('nan')):.4f}; "
        f"{meta.get('n_users_evaluated')} users evaluated, {meta.get('skipped_users')} skipped "
        f"(fewer than {meta.get('protocol', {}).get('min_events')} events); seed {meta.get('seed')}; "
        f"total {meta.get('total_s')} s.",
        "",
        "gAUC: impression-weighted mean of per-user test AUC over users with both classes. Δ: paired "
        "bootstrap over users (95% CI); * = CI excludes 0. lr / l2 / steps: chosen on the validation split.",
        "",
        markdown_table(rows),
        "",
    ]
    md.write_text("\n".join(text))
    return js, md


def write_seeds(
    out: Path, dataset: str, seeds: list[int], rows: list[dict], per_seed: list[dict], meta: dict, command: str = ""
) -> tuple[Path, Path]:
    """``results.json`` (``{"dataset", "seeds", "rows" (the summary), "per_seed": [{"seed", "rows", "meta"}],
    "meta"}``) and ``results.md`` (:func:`seeds_table`) of a multi-seed run, in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    js = out / "results.json"
    js.write_text(
        json.dumps(
            _clean(
                {
                    "dataset": dataset,
                    "seeds": seeds,
                    "rows": rows,
                    "per_seed": per_seed,
                    "meta": {**meta, "command": command},
                }
            ),
            indent=2,
        )
        + "\n"
    )
    md = out / "results.md"
    text = [f"# Offline evaluation: {dataset}, seeds {', '.join(map(str, seeds))}", ""]
    if command:
        text += ["```", command, "```", ""]
    pgs = ", ".join(f"{m.get('global_ctr', float('nan')):.4f}" for m in (p["meta"] for p in per_seed))
    text += [
        f"p_g (cloud part) per seed: {pgs}; p_g used for correction: {meta.get('pg', 'cloud')}; "
        f"total {meta.get('wall_s')} s.",
        "",
        "Means over seeds. CIs: two-level bootstrap (seeds, then users by id; docs/EVALUATION.md, "
        '"Several seeds"); * = the 95% CI excludes 0. "seeds ft < mode": seeds whose own Δ vs ft is > 0.',
        "",
        seeds_table(rows),
        "",
    ]
    md.write_text("\n".join(text))
    return js, md
