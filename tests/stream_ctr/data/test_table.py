"""The user-file loader (stream_ctr.data.table): layout, kinds, ordering and clear errors."""

from __future__ import annotations

import pandas as pd
import pytest

from stream_ctr.data.table import TableError, infer_spec, load_table
from stream_ctr.evaluate.split import Protocol, split_events


def _frame(n_users=3, per_user=12):
    rows = []
    for u in range(n_users):
        for k in range(per_user):
            rows.append(
                {
                    "user_id": f"u{u}",
                    "item_id": f"i{(u * 7 + k) % 20}",
                    "ts": 1000 + 10 * (per_user - k),
                    "label": (k + u) % 3 == 0,
                    "city": ["Paris", "Rome"][k % 2],
                    "price": 1.5 * k,
                    "stars": k % 5,
                    "genres": "A|B" if k % 2 else "C",
                }
            )
    df = pd.DataFrame(rows)
    df["label"] = df["label"].astype(int)
    return df


def test_csv_and_parquet_give_the_same_events(tmp_path):
    df = _frame()
    df.to_csv(tmp_path / "clicks.csv", index=False)
    df.to_parquet(tmp_path / "clicks.parquet", index=False)
    a = load_table(tmp_path / "clicks.csv")
    b = load_table(tmp_path / "clicks.parquet")
    assert len(a.events) == len(df) == len(b.events)
    assert [(e.user_id, e.item_id, e.ts, e.label) for e in a.events] == [
        (e.user_id, e.item_id, e.ts, e.label) for e in b.events
    ]
    ts = [e.ts for e in a.events]
    assert ts == sorted(ts)  # events come out in time order whatever the file order
    assert a.spec == b.spec


def test_kinds_are_inferred_or_declared(tmp_path):
    df = _frame()
    spec = infer_spec(df)
    kinds = {f.name: f.kind for f in spec.fields}
    assert kinds == {"city": "cat", "price": "num", "stars": "cat", "genres": "cat"}
    df.to_csv(tmp_path / "c.csv", index=False)
    t = load_table(tmp_path / "c.csv", features="genres:multi:2,price:num")
    assert [(f.name, f.kind, f.width) for f in t.spec.fields] == [("genres", "multi", 2), ("price", "num", 1)]
    assert set(t.events[0].features) == {"genres", "price"}  # undeclared columns are not features


def test_datetime_timestamps_and_empty_feature_cells(tmp_path):
    (tmp_path / "d.csv").write_text(
        "user_id,item_id,ts,label,city\n1,a,2024-01-02T00:00:00Z,1,\n1,b,2024-01-01T00:00:00Z,0,Oslo\n"
    )
    t = load_table(tmp_path / "d.csv")
    assert [e.item_id for e in t.events] == ["b", "a"]
    assert t.events[0].ts == pytest.approx(1704067200.0)
    assert t.events[0].features == {"city": "Oslo"} and t.events[1].features == {}


@pytest.mark.parametrize(
    "body, message",
    [
        ("user_id,item_id,label\nu,i,1\n", "missing required column(s) ['ts']"),
        ("user_id,item_id,ts,label\nu,i,1,2\nu,j,2,1\n", "column 'label' must be 0 or 1"),
        ("user_id,item_id,ts,label\nu,i,1,yes\n", "column 'label' must be 0 or 1"),
        ("user_id,item_id,ts,label\nu,i,1,\n", "'label' has 1 empty cell"),
        ("user_id,item_id,ts,label\nu,i,soon,1\n", "column 'ts' must be epoch seconds"),
        ("user_id,item_id,ts,label\n,i,1,1\n", "column 'user_id' has 1 empty cell"),
        ("user_id,item_id,ts,label\n", "no rows"),
    ],
)
def test_bad_files_are_clear_errors(tmp_path, body, message):
    path = tmp_path / "bad.csv"
    path.write_text(body)
    with pytest.raises(TableError) as err:
        load_table(path)
    assert message in str(err.value)


def test_unknown_suffix_missing_file_and_undeclared_column(tmp_path):
    with pytest.raises(TableError, match="unknown file type"):
        load_table(tmp_path / "x.xlsx")
    with pytest.raises(TableError, match="no such file"):
        load_table(tmp_path / "nope.csv")
    _frame().to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(TableError, match=r"declared feature column\(s\) \['colour'\]"):
        load_table(tmp_path / "c.csv", features="colour")


def test_a_user_with_one_event_is_a_counted_skip(tmp_path):
    df = pd.concat([_frame(), pd.DataFrame([{"user_id": "lonely", "item_id": "i1", "ts": 5, "label": 1}])])
    df.to_csv(tmp_path / "c.csv", index=False)
    t = load_table(tmp_path / "c.csv")
    data = split_events(t.events, t.spec, Protocol(min_events=10))
    assert data.skipped_users == 1
    assert "lonely" not in {data.user_names[c] for c in data.evaluated}
    assert len(data.evaluated) == 3
