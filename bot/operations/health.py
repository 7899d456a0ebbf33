"""The operator's window: GET /healthz and GET /metrics (Prometheus), on --metrics-port."""

from __future__ import annotations

import json
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bot.core.service import HashtagService
from bot.store import StoreUnavailable


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
        checks = {"model": "loaded" if service.engine.running else "not running"}
        try:
            await service.store.check_writable()
            checks["database"] = "writable"
        except StoreUnavailable as error:
            checks["database"] = str(error)
        for name, connected in platforms.items():
            checks[name] = "connected" if connected() else "disconnected"
        healthy = checks["model"] == "loaded" and checks["database"] == "writable"
        healthy = healthy and all(checks[name] == "connected" for name in platforms)
        for name, reason in failures.items():
            checks[name] = f"failed: {reason}"
            healthy = False
        body = json.dumps({"healthy": healthy, **checks})
        return web.Response(
            text=body, status=200 if healthy else 503, content_type="application/json"
        )

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
