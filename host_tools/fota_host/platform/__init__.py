"""Local CTWing-compatible OTA platform: packages, upgrade tasks, per-device sub-tasks,
token-checked downloads, over an embedded or external MQTT broker.

Modules: `store` (SQLite), `validate` (input checks), `packages` (firmware images),
`engine` (the rules), `mqttlink` (the platform's MQTT client), `broker` (embedded amqtt),
`fileserver` (downloads), `api` + `openapi` (admin API), `service` (`fota platform serve`),
`process` (`start_platform`: the service in a child process), `client` (what the CLI
uses), `mosquitto` (config generator).
"""

from .process import PlatformProcess, start_platform
from .service import ServiceOptions, run_service

__all__ = ["PlatformProcess", "ServiceOptions", "run_service", "start_platform"]
