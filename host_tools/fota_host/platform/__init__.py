"""Local CTWing-compatible OTA platform: packages, upgrade tasks, per-device sub-tasks,
token-checked downloads, over an embedded or external MQTT broker.

Modules: `store` (SQLite), `engine` (the rules), `service` (MQTT, HTTP, clock),
`web` (file server + admin API), `openapi`, `client` (what the CLI uses),
`mosquitto` (config generator), `packages` (firmware images), `validate` (input checks).
"""

from .service import PlatformProcess, ServiceOptions, run_service, start_platform

__all__ = ["PlatformProcess", "ServiceOptions", "run_service", "start_platform"]
