"""The local CTWing-compatible OTA platform: packages, upgrade tasks, per-device sub-tasks,
token-checked downloads, over an embedded or external MQTT broker.

Rules (no I/O but the store): `core` (the `Platform`, composed of) `store` (every SQL
statement; its parts `store_sql` (SQLite or PostgreSQL), `store_migrations` (the schema),
`store_subtasks`, `store_rollouts`), `packages` (+ `variants`: compressed and delta files),
`tasks` (tasks, sub-task states, clock; `tasks_rate`: the push rate), `rollouts` (waves,
thresholds, approval; its options in `rollout_spec`, maintenance `windows`, `fleetstats`),
`reports` (device messages), `downloads` (token check, cut-offs), `ctwing` (the wire
vocabulary), `validate` (input checks, `PlatformError`), `options` (settings), `datadir`
(the data folder: lock, permissions, backup). Transports: `mqttlink` (+ `mqttshare`:
instances sharing a broker), `broker` (embedded amqtt), `mosquitto` (config generator),
`fileserver`, `api` + `api_rollouts` (the admin API; `apijson`: how it reads and answers)
+ `openapi`, `console/` (the web console), `metrics` (`GET /metrics`), `netguard` and
`lograte` (limits on connections and log lines), `service` (`fota platform serve`),
`process` (`start_platform`: the service in a child process), `client` (`PlatformOps`:
what the CLI calls).
"""
