"""Admin API routes of the rollout rules (issue #16): pause, resume, stop, approve, a
task's statistics, device tags and the versions across the fleet. Task creation, start
and show (with waves, state reason, statistics) are api.py's routes, through `Rollouts`."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .fileserver import PLATFORM_KEY
from .rollouts import Rollouts
from .validate import PlatformError


def _rollouts(request: web.Request) -> Rollouts:
    return request.app[PLATFORM_KEY].rollouts


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise PlatformError("the request body must be a JSON object") from None
    if not isinstance(body, dict):
        raise PlatformError("the request body must be a JSON object")
    return body


async def pause(request: web.Request) -> web.Response:
    await _body(request)
    return web.json_response(_rollouts(request).pause(request.match_info["id"]))


async def resume(request: web.Request) -> web.Response:
    await _body(request)
    return web.json_response(_rollouts(request).resume(request.match_info["id"]))


async def stop(request: web.Request) -> web.Response:
    await _body(request)
    return web.json_response(_rollouts(request).stop(request.match_info["id"]))


async def approve(request: web.Request) -> web.Response:
    await _body(request)
    return web.json_response(_rollouts(request).approve(request.match_info["id"]))


async def task_stats(request: web.Request) -> web.Response:
    return web.json_response(_rollouts(request).task_stats(request.match_info["id"]))


async def tag_devices(request: web.Request) -> web.Response:
    body = await _body(request)
    if ("add" in body) == ("remove" in body):
        raise PlatformError("give exactly one of add or remove (a group name)")
    return web.json_response(_rollouts(request).tag(body.get("devices"), body.get("add"),
                                                    body.get("remove")))


async def device_tags(request: web.Request) -> web.Response:
    return web.json_response(_rollouts(request).device_tags())


async def device_versions(request: web.Request) -> web.Response:
    return web.json_response(_rollouts(request).fleet_versions())


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/api/tasks/{id}/pause", pause)
    r.add_post("/api/tasks/{id}/resume", resume)
    r.add_post("/api/tasks/{id}/stop", stop)
    r.add_post("/api/tasks/{id}/approve", approve)
    r.add_get("/api/tasks/{id}/stats", task_stats)
    r.add_get("/api/devices/tags", device_tags)
    r.add_post("/api/devices/tags", tag_devices)
    r.add_get("/api/devices/versions", device_versions)
