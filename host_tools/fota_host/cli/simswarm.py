"""`fota sim swarm`: a thin layer over `fota_host.sim.swarm.run_swarm`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from .output import Finite, emit_json_line, fail


@click.command("swarm")
@click.option("--count", type=click.IntRange(min=1), required=True,
              help="Number of devices (one MQTT connection each).")
@click.option("--broker", required=True,
              help="mqtt://[USER:PASS@]HOST:PORT the devices connect to (mqtts:// for TLS).")
@click.option("--id-prefix", default="swarm-", show_default=True,
              help="Device ids (= MQTT client ids) are PREFIX00001, PREFIX00002, ...; "
                   "PREFIX: 1-32 characters, a letter or digit first, then letters, digits, "
                   "'_', '.', ':' or '-' (no '/', '+', '#').")
@click.option("--version", "version", default="1.0.0", show_default=True,
              help="The version every device runs at the start.")
@click.option("--until-version", default=None,
              help="Run until every device runs this version (default: until every device "
                   "has upgraded once, to any version).")
@click.option("--timeout", type=Finite(min=0, min_open=True), default=600.0,
              show_default=True, help="Seconds; the run ends then whatever the state.")
@click.option("--fail-rate", type=Finite(0, 1), default=0.0, show_default=True,
              help="This fraction of devices gets a corrupted download and reports step -3 "
                   "'md5 mismatch' on every attempt.")
@click.option("--slow-rate", type=Finite(0, 1), default=0.0, show_default=True,
              help="This fraction of devices downloads at --slow-bps.")
@click.option("--slow-bps", type=click.IntRange(min=1), default=32768, show_default=True,
              help="Bytes a second of a slow device's download.")
@click.option("--seed", type=int, default=1, show_default=True,
              help="Which devices fail and which are slow.")
@click.option("--username", default=None, help="Broker user name for every device.")
@click.option("--password", default=None, help="Broker password for every device.")
@click.option("--credentials", "credentials_file",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="credentials.json of `fota platform mosquitto-config`: each device logs in "
                   "with its id as user name and its own password.")
@click.option("--ca", type=click.Path(exists=True, dir_okay=False),
              help="CA certificate (PEM) for mqtts:// and https:// downloads.")
@click.option("--insecure", is_flag=True, help="TLS without verifying the server.")
@click.option("--topic-prefix", default="devices/{device}", show_default=True,
              help="Each device's topic prefix ({device}: its id).")
@click.option("--connect-rate", type=Finite(min=0, min_open=True), default=500.0,
              show_default=True, help="New MQTT connections a second, at most.")
@click.option("--connect-window", type=click.IntRange(min=1), default=100, show_default=True,
              help="Connects under way at once (CONNECT to the first inform acknowledged): "
                   "on a busy machine they slow down instead of timing out.")
@click.option("--http-limit", type=click.IntRange(min=1), default=200, show_default=True,
              help="Downloads in flight at once (one shared HTTP session; the whole swarm "
                   "is one client address: keep it under the platform's max_per_address, "
                   "256 by default).")
@click.option("--start-delay", type=Finite(min=0), default=0.0, show_default=True,
              help="A random wait of up to this many seconds before each download "
                   "(the device's download.start_delay_s).")
@click.option("--reboot-delay", type=Finite(min=0), default=0.5, show_default=True,
              help="Seconds a device stays offline 'rebooting' after step 100.")
@click.option("--keepalive", type=click.IntRange(5, 65535), default=300, show_default=True,
              help="MQTT keepalive in seconds (the agent's default is 60; longer keeps the "
                   "broker from dropping devices while a busy machine lags).")
@click.option("--quiet", is_flag=True, help="No progress bar on stderr.")
def swarm_cmd(count: int, broker: str, id_prefix: str, version: str,
              until_version: str | None, timeout: float, fail_rate: float, slow_rate: float,
              slow_bps: int, seed: int, username: str | None, password: str | None,
              credentials_file: Path | None, ca: str | None, insecure: bool,
              topic_prefix: str, connect_rate: float, connect_window: int, http_limit: int,
              start_delay: float, reboot_delay: float, keepalive: int, quiet: bool) -> None:
    """COUNT lightweight devices in one process (asyncio, CPython) for scale tests.

    Numbers must be finite (nan and inf are refused).

    Each device speaks the CTWing protocol as the MicroPython agent does: it informs its
    version on connect, takes the notice on /ota/upgrade, downloads from the guide's
    address with HTTP Range (resuming after a failed attempt), checks MD5/SHA-256,
    reports /ota/progress (1..99, 100, -2, -3, -1 busy), "reboots" (reconnects) and
    informs the new version with the task's id. The MicroPython fleet (`fota sim fleet`)
    stays the reference for device behaviour.

    Ends when every device is settled (runs --until-version, or its last attempt failed
    and no new notice came) or at --timeout; prints ONE JSON line on stdout:
    {"devices", "upgraded", "failed", "duplicate_notices", "seconds", ...details}.
    duplicate_notices counts notices for a task a device had already taken, or for the
    version it already runs after upgrading. The progress bar goes to stderr.

    Exit code: 0 when every device upgraded; 1 when not (failed, timed out, stopped by
    Ctrl-C/SIGTERM); 2 for bad arguments or a swarm that cannot start (broker unreachable,
    login refused, too few file descriptors).

    Memory: about 21 KiB per connected device (aiomqtt on paho-mqtt; the JSON's
    kib_per_device is each run's figure). One file descriptor per device: the soft limit
    is raised to the hard limit, and a --count that cannot fit is refused.
    """
    import signal
    import threading

    from ..sim.swarm import SwarmError, SwarmOptions, run_swarm

    credentials = read_credentials(credentials_file)
    opts = SwarmOptions(
        count=count, broker=broker, id_prefix=id_prefix, version=version,
        until_version=until_version, timeout=timeout, fail_rate=fail_rate,
        slow_rate=slow_rate, slow_bps=slow_bps, seed=seed, username=username,
        password=password, credentials=credentials, ca=ca, insecure=insecure,
        topic_prefix=topic_prefix, connect_rate=connect_rate, connect_window=connect_window,
        http_limit=http_limit,
        start_delay=start_delay, reboot_delay=reboot_delay, keepalive=keepalive)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_a: stop.set())
    bar = None if quiet or not sys.stderr.isatty() else _Bar(count)
    try:
        result = run_swarm(opts, bar.update if bar else None, stop)
    except SwarmError as exc:
        fail(str(exc))
    finally:
        if bar:
            bar.close()
    emit_json_line(result.to_json())
    sys.exit(0 if result.ok else 1)


def read_credentials(path: Path | None) -> dict[str, str] | None:
    """The "devices" map (id: password) of the credentials.json at `path` (--credentials of
    `fota sim swarm` and `fota sim fleet`); None without one. A file that is not one ends
    the command with an error naming it."""
    import json

    if path is None:
        return None
    try:
        credentials = json.loads(path.read_text())["devices"]
        if not isinstance(credentials, dict):
            raise TypeError
    except (OSError, ValueError, KeyError, TypeError):
        fail(f"--credentials {path}: not the credentials.json of `fota platform "
             "mosquitto-config` (a JSON object with a \"devices\" map of id: password)")
    return credentials


class _Bar:
    """A rich progress bar on stderr: upgraded of COUNT, failed, notices, downloads."""

    def __init__(self, count: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.progress = Progress(TextColumn("swarm"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                                 console=Console(stderr=True), transient=False)
        self.task = self.progress.add_task("swarm", total=count, info="connecting")
        self.progress.start()

    def update(self, snap: Any) -> None:
        s = snap.stats
        info = (f"failed {snap.failed}  notices {s['notices']}  downloads {s['downloads']}"
                f"  dup {snap.duplicate_notices}")
        self.progress.update(self.task, completed=snap.upgraded, info=info)

    def close(self) -> None:
        self.progress.stop()
