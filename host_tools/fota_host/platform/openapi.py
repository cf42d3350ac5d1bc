"""The OpenAPI 3 description of the admin API, served at GET /openapi.json."""

from __future__ import annotations

from typing import Any


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


def _q(name: str, desc: str, required: bool = False, schema: str = "string") -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "description": desc,
            "schema": {"type": schema}}


_ID = [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}]
_DEVICES = {"type": "object", "required": ["devices"],
            "properties": {"devices": {"type": "array", "items": {"type": "string"}}}}

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
                      errors=(400, 401, 413, 502),
                      params=[_q("version", "version number (default: the one the image "
                                     "carries; a different one is refused)"),
                              _q("name", "version name"),
                              _q("product", "product"), _q("sign", "md5 (default) or sha256"),
                              _q("desc", "description"), _q("module", "module, default MCU")]),
                "requestBody": {"required": True, "content": {
                    "application/octet-stream": {"schema": {"type": "string",
                                                            "format": "binary"}},
                    "application/json": {"schema": {"type": "object", "required": ["url"],
                        "properties": {k: {"type": "string"} for k in (
                            "url", "version", "name", "product", "sign", "desc", "module")}}},
                }},
            },
        },
        "/api/packages/{id}": {"get": {**_op("Show a package"), "parameters": [
            {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]}},
        "/api/packages/{id}/variants": {"post": {**_op(
            "Make the package's compressed file, or its delta from the package `from` "
            "(checked by decoding it back before it is served)", ok=201,
            errors=(400, 401, 404, 409, 422), body={
                "type": "object", "required": ["kind"], "properties": {
                    "kind": {"type": "string", "enum": ["compressed", "delta"]},
                    "from": {"type": "string", "description": "base package id (delta)"}}}),
            "parameters": [{"name": "id", "in": "path", "required": True,
                            "schema": {"type": "string"}}]}},
        "/api/tasks": {
            "get": _op("List upgrade tasks with sub-task counts", errors=(401,)),
            "post": _op("Create an upgrade task", ok=201, body={
                "type": "object", "required": ["package", "name"], "properties": {
                    "package": {"type": "string"}, "name": {"type": "string"},
                    "desc": {"type": "string"},
                    "start": {"type": "string", "description": "ISO 8601; starts by itself"},
                    "end": {"type": "string", "description": "ISO 8601; active sub-tasks "
                                                              "time out then"}}}),
        },
        "/api/tasks/{id}": {"get": {**_op("Task detail: id, state, devices[{device, state, "
                                          "step, desc, ...}]"), "parameters": _ID}},
        "/api/tasks/{id}/devices": {"post": {**_op("Add devices; one result per device",
                                                   body=_DEVICES, errors=(400, 401, 404, 409)),
                                             "parameters": _ID}},
        "/api/tasks/{id}/import": {"post": {**_op(
            "Import a CSV device list (column device/deviceId, or one id per line); one "
            "result per row", body={"type": "string"}, body_type="text/csv",
            errors=(400, 401, 404, 409)), "parameters": _ID}},
        "/api/tasks/{id}/start": {"post": {**_op("Start now", errors=(400, 401, 404, 409)),
                                           "parameters": _ID}},
        "/api/tasks/{id}/cancel": {"post": {**_op(
            "Cancel devices' sub-tasks ({devices: [...]}) or all ({all: true})",
            body={"type": "object", "properties": {
                "devices": {"type": "array", "items": {"type": "string"}},
                "all": {"type": "boolean"}}}), "parameters": _ID}},
        "/api/devices": {"get": _op("Devices seen: id, version, last_seen, online",
                                    errors=(401,))},
        "/file/upgrade": {"get": {
            "summary": "Device download (spec address); Range supported",
            "security": [],
            "parameters": [_q("fileId", "package id", True), _q("taskId", "task id", True),
                           _q("deviceId", "device id", True),
                           _q("accessToken", "token from the notice", True)],
            "responses": {"200": {"description": "the image"},
                          "206": {"description": "partial content"},
                          "403": {"description": "bad, expired or other device's token"},
                          "404": {"description": "unknown file"},
                          "416": {"description": "range not satisfiable"}}}},
        "/openapi.json": {"get": {"summary": "This document", "security": [],
                                  "responses": {"200": {"description": "OpenAPI 3"}}}},
    },
}
