"""Any user's own click file: CSV or Parquet with one row per impression.

Layout (one header row for CSV)::

    user_id, item_id, ts, label, <feature columns...>

* ``user_id``, ``item_id``: any non-empty value (read as strings);
* ``ts``: epoch seconds (int or float) or a date/time string pandas can parse (converted to epoch seconds);
* ``label``: 0 or 1 (``true``/``false`` booleans are accepted);
* every other column is a feature. Declare kinds with ``features="age,gender,genres:multi:6,price:num"`` (the
  :meth:`stream_ctr.contracts.features.FeatureSpec.parse` syntax; columns not named are ignored), or let them be
  inferred: string / boolean columns and integer columns with at most ``max_int_levels`` distinct values are
  categorical, other numeric columns are numeric. An empty cell means "feature absent".

Every problem is a :class:`TableError` that says what is wrong and where, never a traceback from deep inside.

>>> import io
>>> csv = io.StringIO("user_id,item_id,ts,label,city,price\\nu1,i1,2,1,Paris,9.5\\nu1,i2,1,0,Rome,3\\n")
>>> t = load_table(csv, fmt="csv")
>>> [e.item_id for e in t.events], [(f.name, f.kind) for f in t.spec.fields]
(['i2', 'i1'], [('city', 'cat'), ('price', 'num')])
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from stream_ctr.contracts.events import Event
from stream_ctr.contracts.features import FeatureSpec, Field

__all__ = ["REQUIRED", "TableData", "TableError", "infer_spec", "load_table"]

REQUIRED = ("user_id", "item_id", "ts", "label")


class TableError(ValueError):
    """The file cannot be used as click data; the message says why."""


@dataclass
class TableData:
    events: list[Event]  # in (ts, input order) order
    spec: FeatureSpec


def _read(source, fmt: str | None) -> pd.DataFrame:
    if fmt is None:
        suffix = Path(str(source)).suffix.lower()
        fmt = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet"}.get(suffix)
        if fmt is None:
            raise TableError(f"{source}: unknown file type {suffix!r}; use .csv, .tsv or .parquet")
    if isinstance(source, (str, Path)) and not Path(source).exists():
        raise TableError(f"{source}: no such file")
    try:
        if fmt == "parquet":
            return pd.read_parquet(source)
        return pd.read_csv(source, sep="\t" if fmt == "tsv" else ",", dtype={"user_id": str, "item_id": str})
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file, reported in one line
        raise TableError(f"{source}: cannot read as {fmt}: {type(exc).__name__}: {exc}") from None


def infer_spec(df: pd.DataFrame, buckets: int = 1 << 15, max_int_levels: int = 50) -> FeatureSpec:
    """Categorical vs numeric for every non-required column (see the module docstring)."""
    fields = []
    for col in df.columns:
        if col in REQUIRED:
            continue
        s = df[col]
        if pd.api.types.is_bool_dtype(s) or not pd.api.types.is_numeric_dtype(s):
            kind = "cat"
        elif pd.api.types.is_integer_dtype(s) or (s.dropna() % 1 == 0).all():
            kind = "cat" if s.nunique(dropna=True) <= max_int_levels else "num"
        else:
            kind = "num"
        fields.append(Field(str(col), kind))
    return FeatureSpec(fields=tuple(fields), buckets=buckets)


def _labels(s: pd.Series, source) -> np.ndarray:
    if s.isna().any():
        raise TableError(f"{source}: column 'label' has {int(s.isna().sum())} empty cell(s); labels must be 0 or 1")
    if pd.api.types.is_bool_dtype(s):
        return s.astype(int).to_numpy()
    num = pd.to_numeric(s, errors="coerce")
    bad = num.isna() | ~num.isin([0, 1])
    if bad.any():
        examples = sorted({repr(v) for v in s[bad].head(20)})[:5]
        raise TableError(
            f"{source}: column 'label' must be 0 or 1; {int(bad.sum())} row(s) are not "
            f"(e.g. {', '.join(examples)}; first at row {int(np.flatnonzero(bad.to_numpy())[0])})"
        )
    return num.astype(int).to_numpy()


def _timestamps(s: pd.Series, source) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(s):
        ts = s.astype(float)
    else:
        try:
            dt = pd.to_datetime(s, utc=True, errors="coerce", format="mixed")
        except (TypeError, ValueError):
            dt = pd.Series(pd.NaT, index=s.index)
        numeric = pd.to_numeric(s, errors="coerce")
        ts = numeric.where(numeric.notna(), (dt - pd.Timestamp(0, tz="UTC")).dt.total_seconds())
    bad = ts.isna() | ~np.isfinite(ts.fillna(0))
    if bad.any():
        raise TableError(
            f"{source}: column 'ts' must be epoch seconds or a date/time; {int(bad.sum())} row(s) "
            f"are not (first at row {int(np.flatnonzero(bad.to_numpy())[0])}: {s[bad].iloc[0]!r})"
        )
    return ts.to_numpy(dtype=float)


def load_table(
    source, features: str | None = None, fmt: str | None = None, buckets: int = 1 << 15, max_int_levels: int = 50
) -> TableData:
    """Read ``source`` (path or file object; ``fmt`` = csv | tsv | parquet, else from the suffix) as events."""
    df = _read(source, fmt)
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise TableError(
            f"{source}: missing required column(s) {missing}; the layout is "
            f"{', '.join(REQUIRED)}, <feature columns> (found: {list(df.columns)})"
        )
    if df.empty:
        raise TableError(f"{source}: no rows")
    for col in ("user_id", "item_id"):
        empty = df[col].isna() | (df[col].astype(str).str.strip() == "")
        if empty.any():
            raise TableError(
                f"{source}: column {col!r} has {int(empty.sum())} empty cell(s) "
                f"(first at row {int(np.flatnonzero(empty.to_numpy())[0])})"
            )
    labels = _labels(df["label"], source)
    ts = _timestamps(df["ts"], source)
    if features:
        spec = FeatureSpec.parse(features, buckets)
        absent = [f.name for f in spec.fields if f.name not in df.columns]
        if absent:
            raise TableError(
                f"{source}: declared feature column(s) {absent} not in the file (found: {list(df.columns)})"
            )
    else:
        spec = infer_spec(df, buckets, max_int_levels)
    for f in spec.fields:
        if f.kind == "num" and not pd.api.types.is_numeric_dtype(df[f.name]):
            bad = pd.to_numeric(df[f.name], errors="coerce").isna() & df[f.name].notna()
            if bad.any():
                raise TableError(
                    f"{source}: numeric feature {f.name!r} has {int(bad.sum())} non-numeric value(s) "
                    f"(e.g. {df[f.name][bad].iloc[0]!r}); declare it as categorical"
                )
    cols = [f.name for f in spec.fields]
    feats = df[cols].astype(object).where(df[cols].notna(), None).to_dict("records") if cols else [{}] * len(df)
    users, items = df["user_id"].astype(str).to_numpy(), df["item_id"].astype(str).to_numpy()
    order = np.lexsort((np.arange(len(df)), ts))
    events = []
    for r in order:
        row = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in feats[r].items() if v is not None}
        events.append(Event(f"row-{r}", users[r], items[r], float(ts[r]), int(labels[r]), row))
    return TableData(events, spec)
