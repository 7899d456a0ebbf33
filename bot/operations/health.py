"""The operator's window: GET /healthz and GET /metrics (Prometheus), on --metrics-port."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bot.core.service import HashtagService
from bot.store import Store, StoreUnavailable

PROBE_EVERY_SECONDS = 30.0
log = logging.getLogger(__name__)


async def start_health_server(
    service: HashtagService,
    platforms: dict[str, Callable[[], bool]],
    host: str,
    port: int,
    failures: dict[str, str] | None = None,
) -> web.AppRunner:
    """Serve until the returned runner is cleaned up. `platforms`: name -> is it connected;
    `failures`: background work that ended, and why (bot.operations.supervisor)."""
    failures = {} if failures is None else failures

    async def healthz(request: web.Request) -> web.Response:
        """From state already held: it answers in milliseconds whatever the database does."""
        checks = {
            "model": "loaded" if service.engine.running else "not running",
            "database": service.store.health.status,
        }
        for name, connected in platforms.items():
            checks[name] = "connected" if connected() else "disconnected"
        healthy = checks["model"] == "loaded" and checks["database"] == "writable"
        healthy = healthy and all(checks[name] == "connected" for name in platforms)
        for name, reason in failures.items():
            checks[name] = f"failed: {reason}"
            healthy = False
        engine = service.engine
        serving = {"engine": engine.engine_name, "batch_size": engine.max_batch_size}
        body = json.dumps({"healthy": healthy, **checks, **serving})
        return web.Response(
            text=body, status=200 if healthy else 503, content_type="application/json"
        )

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.cleanup_ctx.append(_probing(service.store))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


async def _probe_when_quiet(store: Store, every: float) -> None:
    """A write transaction of its own when the database has been quiet for `every` seconds, so
    a disk that filled up or a file that became read-only meanwhile shows in /healthz."""
    quiet_for = 0.0  # the first probe at once: nothing may have been written since the start
    while True:
        if store.health.idle_for() >= quiet_for:
            try:
                await store.check_writable()
            except StoreUnavailable:
                pass  # already in store.health
            except Exception as error:  # an error the store has no words for: say it anyway
                log.exception("the database probe failed")
                store.health.failed(f"the probe failed: {type(error).__name__}: {error}")
        quiet_for = every
        await asyncio.sleep(every)


def _probing(store: Store, every: float = PROBE_EVERY_SECONDS):
    async def context(app: web.Application):
        task = asyncio.create_task(_probe_when_quiet(store, every), name="database probe")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return context
