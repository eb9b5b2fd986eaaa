"""The HTTP views of both roles, on each Faust app's web server. One small function per view, each given the
objects it reads, not the worker.

Worker: ``/metrics`` (Prometheus), ``/healthz``, ``POST /v1/score`` (:mod:`.serving`), ``GET`` and ``DELETE``
``/v1/users/{user_id}`` (routed to the worker that owns the user's partition, as scoring is), ``/v1/experiments``,
``/v1/stats`` and ``/openapi.json``. Scorer: ``/metrics``, ``/healthz``, ``POST /v1/score`` and ``/openapi.json``.
Trainer: ``/metrics`` and ``/healthz``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from faust.web import View
from prometheus_client import CONTENT_TYPE_LATEST

from stream_ctr.serving.scoring import openapi

from .serving import FORWARDED

if TYPE_CHECKING:
    import faust

    from stream_ctr.experiments.attribution import ArmResults
    from stream_ctr.learning.state import UserState
    from stream_ctr.models.snapshot import SnapshotHolder
    from stream_ctr.monitoring.prometheus import ScorerMetrics, TrainerMetrics, WorkerMetrics
    from stream_ctr.serving.keys import ApiKeys
    from stream_ctr.trainer.global_trainer import GlobalTrainer

    from .serving import ScoringView

__all__ = ["register_scorer_views", "register_trainer_views", "register_worker_views"]

_METRICS_TYPE = CONTENT_TYPE_LATEST.split(";")[0]


def _error(web, status: int, message: str):
    return web.json({"error": message}, status=status)


def register_worker_views(
    app: faust.App,
    *,
    metrics: WorkerMetrics,
    holder: SnapshotHolder,
    table: faust.Table,
    users: Mapping[str, UserState],
    scoring: ScoringView,
    results: ArmResults,
    stats: Callable[[], dict],
    erase: Callable[[str], dict],
    keys: ApiKeys | None = None,
) -> None:
    """The personalize worker's views; ``users`` is what the worker learns into (``table``, or a stand-in).
    With ``keys``, every view but ``/metrics``, ``/healthz`` and ``/openapi.json`` needs a key with its scope."""
    _metrics_view(app, metrics.render)
    _worker_health(app, holder)
    _user_view(app, table, users, erase, keys)
    _score_view(app, scoring, keys)
    _experiments_view(app, results, keys)
    _stats_view(app, metrics, stats, keys)
    _openapi_view(app)


def register_scorer_views(
    app: faust.App,
    *,
    metrics: ScorerMetrics,
    ready: Callable[[], str | None],
    details: Callable[[], dict],
    scoring: ScoringView,
    keys: ApiKeys | None = None,
) -> None:
    """A scorer process's views; healthy while ``ready()`` says nothing against it, and then saying ``details()``.
    With ``keys``, scoring needs a key with the ``score`` scope, as on a worker."""
    _metrics_view(app, metrics.render)

    @app.page("/healthz")
    async def healthz(web, request):
        if reason := ready():
            return web.json({"status": "waiting", "reason": reason}, status=503)
        return web.json({"status": "ok", **details()})

    _score_view(app, scoring, keys)
    _openapi_view(app)


def _denied(web, request, keys: ApiKeys | None, scope: str, count: bool = True):
    """The refusal of a request without a key of ``scope`` (401, 403) or over its rate (429); None to serve it."""
    if keys is None:
        return None
    denied = keys.check(request.headers.get("Authorization"), scope, count)
    return None if denied is None else web.json({"error": denied.message}, status=denied.status, headers=denied.headers)


def register_trainer_views(
    app: faust.App, *, metrics: TrainerMetrics, ready: asyncio.Event, trainer: GlobalTrainer
) -> None:
    """The trainer's views: its metrics (``metrics.render``), and healthy once ``ready`` (resumed or started)."""
    _metrics_view(app, metrics.render)

    @app.page("/healthz")
    async def healthz(web, request):
        if not ready.is_set():
            return web.json({"status": "starting"}, status=503)
        return web.json({"status": "ok", "model_version": trainer.version, "samples": trainer.samples})


def _metrics_view(app: faust.App, render: Callable[[], bytes]) -> None:
    @app.page("/metrics")
    async def metrics_view(web, request):
        return web.bytes(render(), content_type=_METRICS_TYPE)


def _worker_health(app: faust.App, holder: SnapshotHolder) -> None:
    @app.page("/healthz")
    async def healthz(web, request):
        if holder.current is None:
            return web.json({"status": "waiting", "reason": "no model snapshot on ctr.model yet"}, status=503)
        return web.json({"status": "ok", "model_version": holder.current.version})


def _user_view(
    app: faust.App,
    table: faust.Table,
    users: Mapping[str, UserState],
    erase: Callable[[str], dict],
    keys: ApiKeys | None,
) -> None:
    """``GET`` a user's state (``read_users``), ``DELETE`` it (``admin``: an erasure), each forwarded to the
    user's owner with the caller's headers."""

    @app.page("/v1/users/{user_id}")
    class UserView(View):
        @app.table_route(table=table, match_info="user_id")
        async def get(self, request, user_id: str):
            if denied := _denied(self, request, keys, "read_users"):
                return denied
            state = users.get(user_id)
            if state is None:
                return _error(self, 404, f"unknown user {user_id!r}: no event of this user was applied")
            return self.json({"user_id": user_id, **state.summary()})

        @app.table_route(table=table, match_info="user_id")
        async def delete(self, request, user_id: str):
            if denied := _denied(self, request, keys, "admin"):
                return denied
            return self.json({"user_id": user_id, **erase(user_id)})


def _score_view(app: faust.App, scoring: ScoringView, keys: ApiKeys | None) -> None:
    @app.page("/v1/score")
    class ScoreView(View):
        async def post(self, request):
            # a request another worker admitted and forwarded here is checked again, without spending a token
            if denied := _denied(self, request, keys, "score", count=not request.headers.get(FORWARDED)):
                return denied
            return await scoring.handle(self, request)


def _experiments_view(app: faust.App, results: ArmResults, keys: ApiKeys | None) -> None:
    """The running experiment (``results.experiment``: its stops included) and its results on this worker."""

    @app.page("/v1/experiments")
    async def experiments_view(web, request):
        if denied := _denied(web, request, keys, "admin"):
            return denied
        experiment = results.experiment
        return web.json(
            {
                "experiments": [
                    {
                        **experiment.to_dict(),
                        "allocation": [list(a) for a in experiment.allocation],
                        "results_on_this_worker": results.summary(),
                    }
                ]
            }
        )


def _openapi_view(app: faust.App) -> None:
    @app.page("/openapi.json")
    async def openapi_view(web, request):
        return web.json(openapi())


def _stats_view(app: faust.App, metrics: WorkerMetrics, stats: Callable[[], dict], keys: ApiKeys | None) -> None:
    @app.page("/v1/stats")
    async def stats_view(web, request):
        if denied := _denied(web, request, keys, "admin"):
            return denied
        if request.query.get("fresh") == "1":  # a report: recompute now, with the paired CIs, off the loop
            await asyncio.get_running_loop().run_in_executor(None, metrics.refresh, True)
        return web.json(stats())
