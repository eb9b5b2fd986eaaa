"""What the broker-tier scoring tests send and read over HTTP (``tests/agents/test_serving_on_broker.py``,
``tests/agents/test_scorer_on_broker.py``): a scoring request of 40 synthetic candidates, and a metric summed over
all its series from a process's ``/metrics``."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["metric_sum", "score_request"]


def score_request(user: str, rid: str) -> dict:
    """A ``POST /v1/score`` body for ``user``: 40 candidates with the synthetic world's features."""
    return {
        "user_id": user,
        "request_id": rid,
        "candidates": [
            {"item_id": f"i{k}", "features": {"category": f"c{k % 12}", "segment": "s1"}} for k in range(40)
        ],
    }


def metric_sum(url: str, name: str) -> float:
    """Every sample named ``name`` on ``url``'s /metrics, summed over their labels."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)
