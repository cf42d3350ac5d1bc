"""`fota platform|package|task|device`: the local CTWing-compatible platform.

A thin layer: `platform.client.connect(DIR)` reaches the running service's admin API (or
the store directly when no service runs on DIR) and every command prints its JSON result.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import click

from .cli import emit_json, fail

DATA = click.option("--data", "data_dir", required=True,
                    type=click.Path(file_okay=False, path_type=Path),
                    help="Platform data folder (holds service.json, the store, the packages).")


def _client(data_dir: Path) -> Any:
    from .platform.client import connect
    from .platform.engine import PlatformError

    try:
        return connect(data_dir)
    except PlatformError as exc:
        fail(str(exc))


def _run(data_dir: Path, op: str, *args: Any, **kwargs: Any) -> Any:
    """Call one client operation; a PlatformError becomes a clear message and exit 2."""
    from .platform.engine import PlatformError

    client = _client(data_dir)
    try:
        return getattr(client, op)(*args, **kwargs)
    except PlatformError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(str(exc))
    finally:
        client.close()


# == fota platform ======================================================================
@click.group("platform")
def platform_group() -> None:
    """Run the local CTWing-compatible OTA platform, generate broker configs."""


@platform_group.command("serve")
@DATA
@click.option("--broker", metavar="URL",
              help="External broker mqtt[s]://[user:pass@]HOST:PORT (default: embedded amqtt).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address the HTTP server and the embedded broker listen on.")
@click.option("--http-port", type=click.IntRange(0, 65535), default=8080, show_default=True,
              help="HTTP(S) port for downloads and the admin API (0: pick a free one).")
@click.option("--mqtt-port", type=click.IntRange(0, 65535), default=1883, show_default=True,
              help="Embedded broker port (0: pick a free one).")
@click.option("--public-url", metavar="URL",
              help="Base address devices use for downloads (default http(s)://HOST:PORT).")
@click.option("--ca", type=click.Path(exists=True, dir_okay=False),
              help="CA bundle for an mqtts:// broker.")
@click.option("--insecure", is_flag=True, help="Do not check the mqtts:// broker's hostname.")
@click.option("--client-id", default="fota-platform", show_default=True,
              help="MQTT client id of the platform (persistent session).")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False),
              help="Serve HTTPS with this certificate (PEM).")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False),
              help="Private key for --tls-cert.")
@click.option("--topic-prefix", default="devices/{device}", show_default=True,
              help="Per-device topic prefix template.")
@click.option("--push-rate", type=click.FloatRange(min=0.1), default=600, show_default=True,
              help="Upgrade notices per minute at most (bursts of ten seconds' worth).")
@click.option("--retries", type=click.IntRange(0, 100), default=0, show_default=True,
              help="Times a failed or timed-out device is notified again.")
@click.option("--retry-backoff", type=click.FloatRange(min=0), default=30, show_default=True,
              help="Seconds before the first retry, doubled after each one.")
@click.option("--device-timeout", type=click.FloatRange(min=0.1), default=600,
              show_default=True, help="Seconds an upgrading device may stay silent.")
@click.option("--token-ttl", type=click.FloatRange(min=1), default=3600, show_default=True,
              help="Seconds a download token stays valid after its notice.")
@click.option("--online-window", type=click.FloatRange(min=1), default=900, show_default=True,
              help="A device seen within this many seconds is listed as online.")
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]))
def serve_cmd(data_dir: Path, broker: str | None, host: str, http_port: int, mqtt_port: int,
              public_url: str | None, ca: str | None, insecure: bool, client_id: str,
              tls_cert: str | None, tls_key: str | None, topic_prefix: str, push_rate: float,
              retries: int, retry_backoff: float, device_timeout: float, token_ttl: float,
              online_window: float, log_level: str) -> None:
    """Run the platform in the foreground until SIGINT/SIGTERM.

    Writes DIR/service.json (api, admin_token, broker, file_base, pid) once ready; the
    package/task/device commands find the service through it.
    """
    from .platform.engine import PlatformError, Settings, TopicMap
    from .platform.service import ServiceOptions, parse_broker_url, run_service

    if bool(tls_cert) != bool(tls_key):
        fail("give both --tls-cert and --tls-key")
    try:
        if broker:
            parse_broker_url(broker)
        TopicMap(topic_prefix)
    except PlatformError as exc:
        fail(str(exc))
    logging.basicConfig(level=log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings(topic_prefix=topic_prefix, push_rate=push_rate, retries=retries,
                        retry_backoff=retry_backoff, device_timeout=device_timeout,
                        token_ttl=token_ttl, online_window=online_window)
    opts = ServiceOptions(data_dir=data_dir, broker=broker, host=host, http_port=http_port,
                          mqtt_port=mqtt_port, public_url=public_url, ca=ca, insecure=insecure,
                          client_id=client_id, tls_cert=tls_cert, tls_key=tls_key,
                          settings=settings)
    try:
        run_service(opts)
    except (OSError, PlatformError) as exc:
        fail(f"cannot serve: {exc}")


@platform_group.command("mosquitto-config")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for mosquitto.conf, passwd, acl and credentials.json.")
@click.option("--device", "devices", multiple=True, metavar="ID", help="A device id (repeat).")
@click.option("--devices-file", type=click.File("r"),
              help="Device ids, one a line or a CSV with a device column.")
@click.option("--port", type=click.IntRange(1, 65535), default=1883, show_default=True)
@click.option("--bind", default="0.0.0.0", show_default=True, help="Listener address.")
@click.option("--platform-user", default="fota-platform", show_default=True,
              help="Username of the platform (reaches every device's topics).")
@click.option("--topic-prefix", default="devices/{device}", show_default=True)
@click.option("--certfile", type=click.Path(exists=True, dir_okay=False),
              help="TLS listener certificate.")
@click.option("--keyfile", type=click.Path(exists=True, dir_okay=False),
              help="TLS listener key.")
@click.option("--cafile", type=click.Path(exists=True, dir_okay=False), help="TLS CA file.")
@click.option("--run-as", metavar="USER",
              help="`user` line: the account mosquitto switches to when started as root "
                   "(the generated files are readable by their owner only).")
def mosquitto_config_cmd(out_dir: Path, devices: tuple[str, ...], devices_file: Any, port: int,
                         bind: str, platform_user: str, topic_prefix: str,
                         certfile: str | None, keyfile: str | None, cafile: str | None,
                         run_as: str | None) -> None:
    """Generate a mosquitto config with per-device credentials and ACL patterns.

    Each device logs in with its id as username and the password from credentials.json and
    can only publish its own <prefix>/ota/inform and /ota/progress and read its own
    /ota/upgrade. The platform user reaches all devices. Prints the --broker URL for
    `fota platform serve`. Re-running keeps issued passwords and adds new devices.
    """
    from .platform.engine import PlatformError
    from .platform.mosquitto import generate

    ids = list(devices)
    if devices_file is not None:
        import csv

        for row in csv.reader(devices_file):
            if row and row[0].strip() and row[0].strip().lower() not in ("device", "deviceid",
                                                                         "device_id", "id"):
                ids.append(row[0].strip())
    try:
        emit_json(generate(out_dir, ids, port=port, bind=bind, platform_user=platform_user,
                           prefix=topic_prefix, cafile=cafile, certfile=certfile,
                           keyfile=keyfile, run_as=run_as))
    except PlatformError as exc:
        fail(str(exc))


# == fota package =======================================================================
@click.group("package")
def package_group() -> None:
    """Firmware packages (the console's 'create firmware package')."""


@package_group.command("create")
@DATA
@click.option("--file", "file", type=click.Path(dir_okay=False), help="Local firmware image.")
@click.option("--url", help="Remote firmware address, fetched once by the platform.")
@click.option("--version", "version", required=True, help="Version number devices report.")
@click.option("--name", help="Version name (default: the version).")
@click.option("--product", help="Product.")
@click.option("--module", help="Module (default MCU).")
@click.option("--sign", type=click.Choice(["md5", "sha256"]), default="md5", show_default=True,
              help="Signature method (md5 is always in the notice; sha256 adds sha256).")
@click.option("--desc", help="Description.")
def package_create(data_dir: Path, file: str | None, url: str | None, version: str,
                   name: str | None, product: str | None, module: str | None, sign: str,
                   desc: str | None) -> None:
    """Store a firmware package; prints it as JSON (with its id)."""
    if bool(file) == bool(url):
        fail("give exactly one of --file or --url")
    meta = {"version": version, "name": name, "product": product, "module": module,
            "sign": sign, "desc": desc}
    emit_json(_run(data_dir, "create_package", file=file, url=url,
                   **{k: v for k, v in meta.items() if v is not None}))


@package_group.command("list")
@DATA
def package_list(data_dir: Path) -> None:
    """All packages as JSON."""
    emit_json(_run(data_dir, "list_packages"))


@package_group.command("show")
@DATA
@click.argument("package_id")
def package_show(data_dir: Path, package_id: str) -> None:
    """One package as JSON."""
    emit_json(_run(data_dir, "get_package", package_id))


# == fota task ==========================================================================
@click.group("task")
def task_group() -> None:
    """Upgrade tasks: create, add devices, start, watch, cancel."""


@task_group.command("create")
@DATA
@click.option("--package", "package", required=True, help="Package id.")
@click.option("--name", required=True, help="Task name.")
@click.option("--desc", help="Description.")
@click.option("--start", help="Start time, ISO 8601 (the task starts by itself then).")
@click.option("--end", help="End time, ISO 8601 (active sub-tasks time out then).")
def task_create(data_dir: Path, package: str, name: str, desc: str | None, start: str | None,
                end: str | None) -> None:
    """Create an upgrade task; prints it as JSON (with its id)."""
    emit_json(_run(data_dir, "create_task", package=package, name=name, desc=desc, start=start,
                   end=end))


@task_group.command("list")
@DATA
def task_list(data_dir: Path) -> None:
    """All tasks with per-state counts, as JSON."""
    emit_json(_run(data_dir, "list_tasks"))


def _results(results: list[dict[str, Any]]) -> None:
    emit_json(results)
    if not any(r.get("ok") for r in results):
        sys.exit(1)


@task_group.command("add-devices")
@DATA
@click.argument("task_id")
@click.argument("devices", nargs=-1, required=True)
def task_add_devices(data_dir: Path, task_id: str, devices: tuple[str, ...]) -> None:
    """Add devices to a task; one JSON result per device (exit 1 when none was added)."""
    _results(_run(data_dir, "add_devices", task_id, list(devices)))


@task_group.command("import")
@DATA
@click.argument("task_id")
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def task_import(data_dir: Path, task_id: str, csv_file: Path) -> None:
    """Import a device list (CSV with a device/deviceId column, or one id a line)."""
    try:
        text = csv_file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {csv_file}: {exc}")
    _results(_run(data_dir, "import_devices", task_id, text))


@task_group.command("start")
@DATA
@click.argument("task_id")
def task_start(data_dir: Path, task_id: str) -> None:
    """Start a task now; prints the task as `task show --json` does."""
    emit_json(_run(data_dir, "start_task", task_id))


@task_group.command("show")
@DATA
@click.argument("task_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def task_show(data_dir: Path, task_id: str, as_json: bool) -> None:
    """Per-device details of a task (a table with progress bars, or JSON)."""
    task = _run(data_dir, "get_task", task_id)
    if as_json:
        # Exactly these three keys (the API's GET /api/tasks/{id} has the task's details).
        emit_json({"id": task["id"], "state": task["state"], "devices": task["devices"]})
        return
    from rich.console import Console
    from rich.progress_bar import ProgressBar
    from rich.table import Table

    colours = {"succeeded": "green", "failed": "red", "timed_out": "red",
               "cancelled": "yellow", "upgrading": "cyan", "pending": "white"}
    table = Table(title=f"task {task['id']} {task['name']!r} → {task['version']}: "
                        f"{task['state']}")
    for col in ("device", "state", "progress", "step", "desc"):
        table.add_column(col)
    for d in task["devices"]:
        step = d["step"] if d["state"] != "succeeded" else 100
        table.add_row(d["device"], f"[{colours.get(d['state'], 'white')}]{d['state']}",
                      ProgressBar(total=100, completed=max(0, step), width=20), str(d["step"]),
                      d["desc"])
    Console().print(table)


@task_group.command("cancel")
@DATA
@click.argument("task_id")
@click.argument("devices", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Cancel every active sub-task.")
def task_cancel(data_dir: Path, task_id: str, devices: tuple[str, ...], all_: bool) -> None:
    """Cancel some devices' sub-tasks, or --all."""
    if bool(devices) == all_:
        fail("give device ids or --all (not both)")
    results = _run(data_dir, "cancel", task_id, None if all_ else list(devices))
    emit_json(results)
    if devices and not any(r.get("ok") for r in results):
        sys.exit(1)


# == fota device ========================================================================
@click.group("device")
def device_group() -> None:
    """Devices the platform has seen."""


@device_group.command("list")
@DATA
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def device_list(data_dir: Path, as_json: bool) -> None:
    """Devices seen: id, last reported version, last seen, online."""
    devices = _run(data_dir, "list_devices")
    if as_json:
        emit_json(devices)
        return
    from datetime import datetime, timezone

    from rich.console import Console
    from rich.table import Table

    table = Table(title="devices")
    for col in ("device", "version", "last seen (UTC)", "online"):
        table.add_column(col)
    for d in devices:
        seen = datetime.fromtimestamp(d["last_seen"], timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(d["id"], d["version"] or "", seen, "yes" if d["online"] else "no")
    Console().print(table)


COMMANDS: list[click.Command] = [platform_group, package_group, task_group, device_group]
