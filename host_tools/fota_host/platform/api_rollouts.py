"""Admin API routes of the rollout rules (issue #16): pause, resume, stop, approve, a
task's statistics, device tags and the versions across the fleet. Task creation, start
and show (with waves, state reason, statistics) are api.py's routes, through `Rollouts`."""

from __future__ import annotations

from aiohttp import web

from .apijson import answer, answer_on, json_body, json_response, platform
from .validate import PlatformError


async def tag_devices(request: web.Request) -> web.Response:
    body = await json_body(request, optional=True)
    if ("add" in body) == ("remove" in body):
        raise PlatformError("give exactly one of add or remove (a group name)")
    return json_response(platform(request).rollouts.tag(
        body.get("devices"), body.get("add"), body.get("remove")))


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/api/tasks/{id}/pause", answer_on(lambda p, task: p.rollouts.pause(task),
                                                  body=True))
    r.add_post("/api/tasks/{id}/resume", answer_on(lambda p, task: p.rollouts.resume(task),
                                                   body=True))
    r.add_post("/api/tasks/{id}/stop", answer_on(lambda p, task: p.rollouts.stop(task),
                                                 body=True))
    r.add_post("/api/tasks/{id}/approve", answer_on(lambda p, task: p.rollouts.approve(task),
                                                    body=True))
    r.add_get("/api/tasks/{id}/stats", answer_on(lambda p, task: p.rollouts.task_stats(task)))
    r.add_get("/api/devices/tags", answer(lambda p: p.rollouts.device_tags()))
    r.add_post("/api/devices/tags", tag_devices)
    r.add_get("/api/devices/versions", answer(lambda p: p.rollouts.fleet_versions()))
