"""The HTTP views of both roles, on each Faust app's web server. One small function per view.

Worker: ``/metrics`` (Prometheus), ``/healthz``, ``POST /v1/score`` (:mod:`.serving`), ``/v1/users/{user_id}``
(both routed to the worker that owns the user's partition), ``/v1/experiments``, ``/v1/stats`` and
``/openapi.json``. Trainer: ``/metrics`` and ``/healthz``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from faust.web import View
from prometheus_client import CONTENT_TYPE_LATEST

from stream_ctr.serving.scoring import openapi

if TYPE_CHECKING:
    from .personalize import PersonalizeWorker
    from .trainer import TrainerWorker

__all__ = ["register_trainer_views", "register_worker_views"]

_METRICS_TYPE = CONTENT_TYPE_LATEST.split(";")[0]


def _error(web, status: int, message: str):
    return web.json({"error": message}, status=status)


def register_worker_views(worker: PersonalizeWorker) -> None:
    app, metrics, holder = worker.app, worker.metrics, worker.follower.holder

    @app.page("/metrics")
    async def metrics_view(web, request):
        return web.bytes(metrics.render(), content_type=_METRICS_TYPE)

    @app.page("/healthz")
    async def healthz(web, request):
        if holder.current is None:
            return web.json({"status": "waiting", "reason": "no model snapshot on ctr.model yet"}, status=503)
        return web.json({"status": "ok", "model_version": holder.current.version})

    @app.page("/v1/users/{user_id}")
    @app.table_route(table=worker.table, match_info="user_id")
    async def user_view(web, request, user_id: str):
        state = worker.users.get(user_id)
        if state is None:
            return _error(web, 404, f"unknown user {user_id!r}: no event of this user was applied")
        return web.json({"user_id": user_id, **state.summary()})

    @app.page("/v1/score")
    class ScoreView(View):
        async def post(self, request):
            return await worker.scoring.handle(self, request)

    @app.page("/v1/experiments")
    async def experiments_view(web, request):
        exp = worker.experiment
        return web.json(
            {
                "experiments": [
                    {
                        **exp.to_dict(),
                        "allocation": [list(a) for a in exp.allocation],
                        "results_on_this_worker": worker.results.summary(),
                    }
                ]
            }
        )

    @app.page("/openapi.json")
    async def openapi_view(web, request):
        return web.json(openapi())

    @app.page("/v1/stats")
    async def stats_view(web, request):
        if request.query.get("fresh") == "1":  # a report: recompute now, with the paired CIs, off the loop
            await asyncio.get_running_loop().run_in_executor(None, metrics.refresh, True)
        return web.json(worker.stats())


def register_trainer_views(worker: TrainerWorker) -> None:
    app = worker.app

    @app.page("/metrics")
    async def metrics_view(web, request):
        return web.bytes(worker.metrics.render(), content_type=_METRICS_TYPE)

    @app.page("/healthz")
    async def healthz(web, request):
        if not worker.ready.is_set():
            return web.json({"status": "starting"}, status=503)
        return web.json({"status": "ok", "model_version": worker.trainer.version, "samples": worker.trainer.samples})
