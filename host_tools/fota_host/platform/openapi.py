"""The OpenAPI 3 description of the admin API, served at GET /openapi.json."""

from __future__ import annotations

from typing import Any

from .validate import DEVICE_RE, DEVICE_RULE, MAX_TEXT, PACKAGE_RE


def _op(summary: str, *, body: dict[str, Any] | None = None, body_type: str = "application/json",
        ok: int = 200, params: list[dict[str, Any]] | None = None,
        errors: tuple[int, ...] = (400, 401, 404)) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {
        str(ok): {"description": "OK", "content": {"application/json": {}}}}}
    for code in errors:
        op["responses"][str(code)] = {"$ref": "#/components/responses/Error"}
    if body is not None:
        op["requestBody"] = {"required": True, "content": {body_type: {"schema": body}}}
    if params:
        op["parameters"] = params
    return op


# The rules the server enforces (validate.py), stated so that a request the document allows
# is one the server accepts (checked by schemathesis in tests/host/platform).
_TEXT = {"type": "string", "maxLength": MAX_TEXT, "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$",
         "description": f"at most {MAX_TEXT} characters, no control characters"}
_NAME = {**_TEXT, "minLength": 1}
_DEVICE = {"type": "string", "pattern": DEVICE_RE.pattern.replace("\\Z", "$"),
           "description": DEVICE_RULE}
_PACKAGE = {"type": "string", "pattern": PACKAGE_RE.pattern.replace("\\Z", "$"),
            "description": "package id (20 hex digits)"}
_TIME = {"type": "string", "format": "date-time"}


def _q(name: str, desc: str, required: bool = False,
       schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "description": desc,
            "schema": schema or _TEXT}


_ID = [{"name": "id", "in": "path", "required": True,
        "schema": {"type": "integer", "minimum": 1, "maximum": 2**62}}]
_PKG_ID = [{"name": "id", "in": "path", "required": True, "schema": _PACKAGE}]
_DEVICE_LIST = {"type": "array", "items": _DEVICE, "minItems": 1}
_DEVICES = {"type": "object", "required": ["devices"], "properties": {"devices": _DEVICE_LIST}}
_META = {"name": "version name (default: the version)", "product": "product",
         "desc": "description", "module": "module, default MCU"}
_AMOUNT = {"type": "string", "pattern": "^([1-9][0-9]{0,5}|([1-9][0-9]?|100)%)$",
           "description": "a count N, or a percentage P% of the task's devices"}
_DAY = "(mon|tue|wed|thu|fri|sat|sun)"
_WINDOW = {"type": "string", "maxLength": 100,
           "pattern": f"^(daily|\\*|{_DAY}(-{_DAY})?(,{_DAY}(-{_DAY})?)*) "
                      "([01][0-9]|2[0-3]):[0-5][0-9]-(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)"
                      "( (UTC|Europe/Berlin|Asia/Shanghai|America/New_York))?$",
           "description": "DAYS HH:MM-HH:MM [ZONE], e.g. "
           "mon-fri 22:00-05:00 Europe/Berlin (docs/platform.md)"}
_ROLLOUT = {
    "waves": {"type": "array", "maxItems": 50, "items": {"anyOf": [
        _AMOUNT, {"type": "string", "enum": ["rest"]}]},
        "description": "wave sizes in order; the last wave takes the rest"},
    "max_failures": {**_AMOUNT, "description": "failures (N, or P% of the ended devices) "
                     "that pause or stop the task"},
    "min_ended": {"type": "integer", "minimum": 0, "maximum": 1000000,
                  "description": "devices that must have ended before failures count"},
    "on_failure": {"type": "string", "enum": ["pause", "stop"]},
    "approve_waves": {"type": "boolean"},
    "from_versions": {"type": "array", "maxItems": 100, "items": _NAME},
    "groups": {"type": "array", "maxItems": 100, "items": _DEVICE},
    "continuous": {"type": "boolean"},
    "windows": {"type": "array", "maxItems": 20, "items": _WINDOW},
    "allow_downgrade": {"type": "boolean"},
}
_VERSION = "version number (required unless the image carries one; a different one is refused)"

OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "fota platform admin API", "version": "1",
             "description": "Local CTWing-compatible OTA platform. Every /api path needs "
                            "`Authorization: Bearer <admin_token>` (from DIR/service.json). "
                            "Errors are {\"error\": message}."},
    "components": {
        "securitySchemes": {"admin": {"type": "http", "scheme": "bearer"}},
        "responses": {"Error": {"description": "error", "content": {"application/json": {
            "schema": {"type": "object", "properties": {"error": {"type": "string"}}}}}}},
    },
    "security": [{"admin": []}],
    "paths": {
        "/api/health": {"get": _op("Liveness", errors=(401,))},
        "/api/stats": {"get": _op("Messages accepted/dropped, progress reports stored",
                                  errors=(401,))},
        "/api/packages": {
            "get": _op("List firmware packages", errors=(401,)),
            "post": {
                **_op("Create a firmware package: the image as the body "
                      "(application/octet-stream) with metadata in the query, or a JSON "
                      "object with `url` (fetched once) and the same metadata", ok=201,
                      errors=(400, 401, 413, 422, 502),
                      params=[_q("version", _VERSION, True, _NAME),
                              *(_q(k, d) for k, d in _META.items()),
                              _q("sign", "digest in the notice",
                                 schema={"type": "string", "enum": ["md5", "sha256"]})]),
                "requestBody": {"required": True, "content": {
                    "application/octet-stream": {"schema": {
                        "type": "string", "format": "binary", "minLength": 1,
                        "description": f"the image, 1 byte to {64 << 20} bytes"}},
                    "application/json": {"schema": {
                        "type": "object", "required": ["url", "version"],
                        "properties": {
                            "url": {"type": "string", "maxLength": 2000,
                                    "pattern": "^https?://[A-Za-z0-9.-]+(:[0-9]{1,4})?(/|$)"},
                            "version": _NAME, **{k: _TEXT for k in _META},
                            "sign": {"type": "string", "enum": ["md5", "sha256"]}}}},
                }},
            },
        },
        "/api/packages/{id}": {"get": {**_op("Show a package"), "parameters": _PKG_ID}},
        "/api/packages/{id}/variants": {"post": {**_op(
            "Make the package's compressed file, or its delta from the package `from` "
            "(checked by decoding it back before it is served)", ok=201,
            errors=(400, 401, 404, 409, 422), body={
                "type": "object", "required": ["kind"], "properties": {
                    "kind": {"type": "string", "enum": ["compressed", "delta"]},
                    "from": {**_PACKAGE, "description": "base package id (delta)"}}}),
            "parameters": _PKG_ID}},
        "/api/tasks": {
            "get": _op("List upgrade tasks with sub-task counts", errors=(401,)),
            "post": _op("Create an upgrade task, with the rollout rules (waves, thresholds, "
                        "filters, windows: docs/platform.md)", ok=201,
                        errors=(400, 401, 404, 409, 422), body={
                "type": "object", "required": ["package", "name"], "properties": {
                    "package": _PACKAGE, "name": _NAME, "desc": _TEXT, **_ROLLOUT,
                    "start": {**_TIME, "description": "starts by itself then"},
                    "end": {**_TIME, "description": "after start; active sub-tasks time out "
                                                    "then"}}}),
        },
        "/api/tasks/{id}": {"get": {**_op(
            "Task detail: id, state (not_started, running, paused, stopped, finished), reason "
            "(paused/stopped), waiting, waves[{index, size, state, succeeded, failed, ...}], "
            "stats, rollout, devices[{device, state, step, desc, wave, ...}]"),
            "parameters": _ID}},
        **{f"/api/tasks/{{id}}/{verb}": {"post": {**_op(what, errors=(400, 401, 404, 409)),
                                                  "parameters": _ID}}
           for verb, what in (("pause", "Pause: no new notices, devices upgrading finish"),
                              ("resume", "Resume a paused task (failures counted afresh)"),
                              ("stop", "Stop: pending sub-tasks are cancelled"),
                              ("approve", "Approve the next wave (approve_waves)"))},
        "/api/tasks/{id}/stats": {"get": {**_op(
            "Counts by state, success rate, median and p95 duration, failures by reason; "
            "per wave too"), "parameters": _ID}},
        "/api/devices/tags": {
            "get": _op("Tags (groups) of each tagged device", errors=(401,)),
            "post": _op("Tag devices: {devices, add: G} or {devices, remove: G}",
                        errors=(400, 401), body={
                            "type": "object", "required": ["devices"],
                            "properties": {"devices": _DEVICE_LIST, "add": _DEVICE,
                                           "remove": _DEVICE},
                            "oneOf": [{"required": ["add"]}, {"required": ["remove"]}]})},
        "/api/devices/versions": {"get": _op("Versions running across the fleet",
                                             errors=(401,))},
        "/api/tasks/{id}/devices": {"post": {**_op("Add devices; one result per device",
                                                   body=_DEVICES, errors=(400, 401, 404, 409)),
                                             "parameters": _ID}},
        "/api/tasks/{id}/import": {"post": {**_op(
            "Import a CSV device list (column device/deviceId, or one id per line); one "
            "result per row", body={"type": "string", "pattern": "[A-Za-z0-9]",
                                    "maxLength": 4 << 20}, body_type="text/csv",
            errors=(400, 401, 404, 409, 413, 422)), "parameters": _ID}},
        "/api/tasks/{id}/start": {"post": {**_op("Start now", errors=(400, 401, 404, 409)),
                                           "parameters": _ID}},
        "/api/tasks/{id}/cancel": {"post": {**_op(
            "Cancel devices' sub-tasks ({devices: [...]}) or all ({all: true})",
            body={"oneOf": [
                {"type": "object", "required": ["all"],
                 "properties": {"all": {"type": "boolean", "enum": [True]}}},
                {"type": "object", "required": ["devices"],
                 "properties": {"devices": _DEVICE_LIST,
                                "all": {"type": "boolean", "enum": [False]}}}]},
            errors=(400, 401, 404, 409)), "parameters": _ID}},
        "/api/devices": {"get": _op("Devices seen: id, version, last_seen, online",
                                    errors=(401,))},
        "/file/upgrade": {"get": {
            "summary": "Device download (spec address); Range supported",
            "security": [],
            "parameters": [_q("fileId", "package id", True, _PACKAGE),
                           _q("taskId", "task id", True, _ID[0]["schema"]),
                           _q("deviceId", "device id", True, _DEVICE),
                           _q("accessToken", "token from the notice", True,
                              {"type": "string", "maxLength": 200})],
            "responses": {"200": {"description": "the image"},
                          "206": {"description": "partial content"},
                          "403": {"description": "bad, expired or other device's token"},
                          "404": {"description": "unknown file"},
                          "416": {"description": "range not satisfiable"}}}},
        "/openapi.json": {"get": {"summary": "This document", "security": [],
                                  "responses": {"200": {"description": "OpenAPI 3"}}}},
    },
}
