"""Local CTWing-compatible OTA platform: packages, upgrade tasks, per-device sub-tasks,
token-checked downloads, over an embedded or external MQTT broker.

Modules: `store` (SQLite), `validate` (input checks), `packages` (firmware images),
`engine` (the rules), `mqttlink` (the platform's MQTT client), `broker` (embedded amqtt),
`fileserver` (downloads), `api` + `openapi` (admin API), `service` (`fota platform serve`),
`process` (`start_platform`: the service in a child process), `client` (what the CLI
uses), `mosquitto` (config generator).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .process import PlatformProcess, start_platform
    from .service import ServiceOptions, run_service

__all__ = ["PlatformProcess", "ServiceOptions", "run_service", "start_platform"]

# Imported on first use: the service pulls in aiohttp and amqtt, which the CLI's quick
# commands (`fota task list`, ...) talking to a running service do not need.
_HOMES = {"PlatformProcess": "process", "start_platform": "process",
          "ServiceOptions": "service", "run_service": "service"}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(import_module(f".{_HOMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
