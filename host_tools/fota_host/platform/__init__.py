"""The local CTWing-compatible OTA platform: packages, upgrade tasks, per-device sub-tasks,
token-checked downloads, over an embedded or external MQTT broker.

Rules (no I/O but the store): `core` (the `Platform`, composed of) `store` (every SQL
statement), `packages`, `tasks` (tasks, sub-task states, clock, push rate), `reports`
(device messages), `downloads` (token check, cut-offs), `ctwing` (the wire vocabulary),
`validate` (input checks, `PlatformError`), `options` (settings). Transports: `mqttlink`,
`broker` (embedded amqtt), `mosquitto` (config generator), `fileserver`, `api` + `openapi`,
`service` (`fota platform serve`), `process` (`start_platform`: the service in a child
process), `client` (`PlatformOps`: what the CLI calls).
"""
