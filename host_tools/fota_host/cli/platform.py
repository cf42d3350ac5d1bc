"""`fota platform serve|mosquitto-config`: run the local CTWing-compatible platform,
generate a broker config."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import click

from .output import Finite, emit_json, fail
from .tasks import DATA


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
@click.option("--broker-auth", type=click.Path(file_okay=False, path_type=Path),
              help="Embedded broker: per-device logins from this `mosquitto-config --out` "
                   "folder (default beyond loopback: DIR/broker).")
@click.option("--max-per-address", type=click.IntRange(1, 100000), default=256,
              show_default=True,
              help="Open HTTP connections one client address may hold (a fleet behind one "
                   "NAT downloading at once may need more).")
@click.option("--allow-anonymous", is_flag=True,
              help="Embedded broker beyond loopback without logins (warned: anyone who "
                   "reaches it reads every notice and can forge reports).")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False),
              help="Serve HTTPS with this certificate (PEM).")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False),
              help="Private key for --tls-cert.")
@click.option("--topic-prefix", default="devices/{device}", show_default=True,
              help="Per-device topic prefix template.")
@click.option("--push-rate", type=Finite(min=0.1), default=600, show_default=True,
              help="Upgrade notices per minute at most (bursts of ten seconds' worth).")
@click.option("--retries", type=click.IntRange(0, 100), default=0, show_default=True,
              help="Times a failed or timed-out device is notified again.")
@click.option("--retry-backoff", type=Finite(min=0), default=30, show_default=True,
              help="Seconds before the first retry, doubled after each one.")
@click.option("--device-timeout", type=Finite(min=0.1), default=600,
              show_default=True, help="Seconds an upgrading device may stay silent.")
@click.option("--token-ttl", type=Finite(min=1), default=3600, show_default=True,
              help="Seconds a download token stays valid after its notice.")
@click.option("--online-window", type=Finite(min=1), default=120, show_default=True,
              help="A device is listed as online while its last message is at most this "
                   "many seconds old (and the platform is connected to the broker).")
@click.option("--require-signed", is_flag=True,
              help="Refuse packages without a Secure Boot V2 signature (`fota sign`).")
@click.option("--db", metavar="URL",
              help="Keep the store in PostgreSQL, postgresql://USER:PASS@HOST[:PORT]/DB, "
                   "shared by any number of instances, which need one external --broker "
                   "(default: DIR/platform.db, SQLite, one instance). The platform creates "
                   "and migrates the schema.")
@click.option("--share-group", metavar="GROUP",
              help="MQTT shared-subscription group ($share/GROUP/...): each device message "
                   "reaches one instance of the group (needs --db; default with --db: "
                   "fota; '' for plain subscriptions).")
@click.option("--packages", "packages_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder of the package images (default DIR/packages); instances sharing "
                   "a --db database must share it.")
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]),
              help="Lowest level of log line written.")
def serve_cmd(data_dir: Path, broker: str | None, host: str, http_port: int, mqtt_port: int,
              public_url: str | None, ca: str | None, insecure: bool, client_id: str,
              tls_cert: str | None, tls_key: str | None, topic_prefix: str, push_rate: float,
              retries: int, retry_backoff: float, device_timeout: float, token_ttl: float,
              online_window: float, require_signed: bool, log_level: str,
              broker_auth: Path | None = None, allow_anonymous: bool = False,
              max_per_address: int = 256, db: str | None = None,
              share_group: str | None = None, packages_dir: Path | None = None) -> None:
    """Run the platform in the foreground until SIGINT/SIGTERM.

    Writes DIR/service.json (api, admin_token, broker, file_base, pid) once ready; the
    package/task/device commands find the service through it. One instance per DIR; with
    --db, several instances (each with its own DIR) share one PostgreSQL database.
    """
    from ..platform.ctwing import TopicMap
    from ..platform.mqttlink import parse_broker_url
    from ..platform.options import ServiceOptions, Settings
    from ..platform.service import run_service
    from ..platform.store_sql import check_db_url, is_postgres
    from ..platform.validate import PlatformError, check_public_url

    if bool(tls_cert) != bool(tls_key):
        fail("give both --tls-cert and --tls-key")
    try:
        if tls_cert and tls_key:
            from ..platform.tlsfiles import server_context

            server_context(tls_cert, tls_key)  # before the broker starts or DIR is made
        if broker:
            parse_broker_url(broker)
        TopicMap(topic_prefix)
    except PlatformError as exc:
        fail(str(exc))
    try:
        check_public_url(public_url)
        if db is not None:
            check_db_url(db)
        if share_group and any(c in share_group for c in "/+#"):
            raise PlatformError("--share-group: a name without '/', '+' or '#'")
        if share_group and not is_postgres(db):
            raise PlatformError("--share-group needs the shared PostgreSQL store (--db "
                                "postgresql://...): instances sharing device messages must "
                                "share one database")
        if is_postgres(db) and not broker:
            raise PlatformError("a PostgreSQL store is for several instances, which must share "
                                "one external broker: add --broker mqtt://HOST:PORT")
    except PlatformError as exc:
        fail(str(exc))
    logging.basicConfig(level=log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings(topic_prefix=topic_prefix, push_rate=push_rate, retries=retries,
                        retry_backoff=retry_backoff, device_timeout=device_timeout,
                        token_ttl=token_ttl, online_window=online_window,
                        require_signed=require_signed, db=db, share_group=share_group,
                        packages_dir=str(packages_dir) if packages_dir else None)
    opts = ServiceOptions(data_dir=data_dir, broker=broker, host=host, http_port=http_port,
                          mqtt_port=mqtt_port, public_url=public_url, ca=ca, insecure=insecure,
                          client_id=client_id, tls_cert=tls_cert, tls_key=tls_key,
                          broker_auth=str(broker_auth) if broker_auth else None,
                          allow_anonymous=allow_anonymous, max_per_address=max_per_address,
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
@click.option("--port", type=click.IntRange(1, 65535), default=1883, show_default=True,
              help="Listener port.")
@click.option("--bind", default="0.0.0.0", show_default=True, help="Listener address.")
@click.option("--platform-user", default="fota-platform", show_default=True,
              help="Username of the platform (reaches every device's topics).")
@click.option("--topic-prefix", default="devices/{device}", show_default=True,
              help="Per-device topic prefix template (as the platform's --topic-prefix).")
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
    from ..platform.mosquitto import generate
    from ..platform.validate import PlatformError

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



@platform_group.command("backup")
@DATA
@click.option("-o", "--output", "output", required=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="The backup file to write (a tar file).")
def backup_cmd(data_dir: Path, output: Path) -> None:
    """Back up the store and the package images (safe while the service runs).

    The store is copied with SQLite's online backup, so the copy is consistent even while
    `fota platform serve` writes to it. Prints {"backup", "packages", "images",
    "missing_images"}.
    """
    from ..platform.datadir import backup
    from ..platform.validate import PlatformError

    try:
        emit_json(backup(data_dir, output))
    except (OSError, PlatformError) as exc:
        fail(f"backup failed: {exc}")


@platform_group.command("restore")
@DATA
@click.argument("backup_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def restore_cmd(data_dir: Path, backup_file: Path) -> None:
    """Restore a backup made by `fota platform backup` (or a plain platform.db copy).

    Refused while a platform runs on DIR. The backup's store is checked first; the store it
    replaces is kept next to it as platform.db.damaged-<time>. Prints {"restored",
    "images", "kept"}.
    """
    from ..platform.datadir import restore
    from ..platform.validate import PlatformError

    try:
        emit_json(restore(data_dir, backup_file))
    except (OSError, PlatformError) as exc:
        fail(f"restore failed: {exc}")


COMMANDS: list[click.Command] = [platform_group]
