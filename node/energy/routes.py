"""API routes: ``GET /api/energy`` (the dashboard's), ``POST /v1/node/pause`` and ``/resume``."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

if TYPE_CHECKING:
    from hearth.node.energy.service import EnergyService

PAUSE_S_MAX = 366 * 24 * 3600


def build_energy_routes(energy: EnergyService) -> list[Route]:
    async def get_energy(request: Request) -> Response:
        return JSONResponse(energy.api_json())

    async def pause(request: Request) -> Response:
        try:
            body = await request.json() if await request.body() else {}
        except ValueError:
            return JSONResponse({"error": "the body must be JSON"}, status_code=400)
        for_s = body.get("for_s") if isinstance(body, dict) else "?"
        if for_s is not None and (
            isinstance(for_s, bool)
            or not isinstance(for_s, int | float)
            or not math.isfinite(for_s)
            or not 0 < for_s <= PAUSE_S_MAX
        ):
            return JSONResponse(
                {"error": f"for_s must be a number of seconds, 1 to {PAUSE_S_MAX}, or null"},
                status_code=400,
            )
        energy.pause(None if for_s is None else round(for_s * 1000))
        return JSONResponse(energy.status_json())

    async def resume(request: Request) -> Response:
        energy.resume()
        return JSONResponse(energy.status_json())

    return [
        Route("/api/energy", get_energy),
        Route("/v1/node/pause", pause, methods=["POST"]),
        Route("/v1/node/resume", resume, methods=["POST"]),
    ]
