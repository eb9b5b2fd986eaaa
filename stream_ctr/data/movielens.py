"""MovieLens-100K as click events, read from the ``recbole==1.2.1`` package (its licence forbids redistribution,
so the project depends on the package and never ships the file).

click = rating >= 4. Features: the user's age decade, gender and occupation, and the movie's genres
(``"Action|Comedy"``). Events come out in timestamp order (ties broken by user, then item).
"""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

from stream_ctr.contracts.events import Event

__all__ = ["load_movielens_100k", "movielens_dir"]


def movielens_dir() -> Path:
    # find_spec locates the package without importing it: recbole is installed --no-deps and cannot import.
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("MovieLens-100K comes from the recbole package: pip install --no-deps recbole==1.2.1")
    path = Path(spec.submodule_search_locations[0]) / "dataset_example" / "ml-100k"
    if not (path / "ml-100k.inter").exists():
        raise FileNotFoundError(f"{path}/ml-100k.inter is missing; reinstall recbole==1.2.1")
    return path


def _rows(path: Path):
    with open(path, newline="", encoding="latin-1") as f:
        reader = csv.reader(f, delimiter="\t")
        header = [h.split(":")[0] for h in next(reader)]
        for row in reader:
            yield dict(zip(header, row))


def load_movielens_100k() -> list[Event]:
    root = movielens_dir()
    users = {r["user_id"]: r for r in _rows(root / "ml-100k.user")}
    items = {r["item_id"]: r for r in _rows(root / "ml-100k.item")}
    inter = sorted(
        _rows(root / "ml-100k.inter"), key=lambda r: (float(r["timestamp"]), int(r["user_id"]), int(r["item_id"]))
    )
    events = []
    for r in inter:
        u, i = users[r["user_id"]], items.get(r["item_id"], {})
        features = {
            "age": str(int(u["age"]) // 10 * 10),
            "gender": u["gender"],
            "occupation": u["occupation"],
            "genres": "|".join(i.get("class", "").split()),
        }
        events.append(
            Event(
                f"ml-{r['user_id']}-{r['item_id']}",
                r["user_id"],
                r["item_id"],
                float(r["timestamp"]),
                int(float(r["rating"]) >= 4),
                features,
            )
        )
    return events
