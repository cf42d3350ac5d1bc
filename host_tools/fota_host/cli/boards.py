"""Real boards: `fota build`, `fota typecheck`, `fota deploy`, `fota hil` and
`fota device provision` (attached to the device group by the root)."""

from __future__ import annotations

from pathlib import Path

import click

from .output import Finite, emit_json, fail

BOARDS = click.Choice(["esp32", "esp32s3", "esp32c3", "esp32c6", "pico_w", "pico2_w"])


@click.command("build")
@click.option("--refetch", is_flag=True, help="Download the device libraries again.")
def build_cmd(refetch: bool) -> None:
    """Fetch the device libraries and compile the device code to .mpy (build/)."""
    from ..boards import build

    try:
        if refetch:
            build.fetch_libs(force=True)
        counts = build.build_device(fetch=True)
    except (build.BuildError, OSError) as exc:
        fail(str(exc))
    emit_json({"compiled": counts})


@click.command("typecheck")
@click.option("--port", "ports", multiple=True,
              type=click.Choice(["esp32", "rp2", "esp32s3", "esp32c3", "esp32c6", "pico2_w"]),
              help="Only this port (esp32, rp2) or board with its own stubs (repeat); "
                   "default all.")
@click.option("--warnings", is_flag=True, help="Show warnings too.")
def typecheck_cmd(ports: tuple[str, ...], warnings: bool) -> None:
    """Type-check the device code against the official MicroPython port stubs."""
    from ..boards import typecheck

    failed = False
    try:
        for port in ports or tuple(typecheck.TARGETS):
            result = typecheck.check(port)
            for line in typecheck.format_diagnostics(result, warnings):
                click.echo(line)
            s = result.summary()
            click.echo(f"{port}: {s['files']} files, {s['errors']} errors, "
                       f"{s['warnings']} warnings")
            failed |= not result.ok
    except typecheck.TypecheckError as exc:
        fail(str(exc))
    if failed:
        raise SystemExit(1)


@click.command("deploy")
@click.option("--board", type=BOARDS, required=True, help="The board kind.")
@click.option("--port", default="", help="Serial port of the board, e.g. /dev/ttyUSB0.")
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Device config (fota device provision writes one).")
@click.option("--dry-run", is_flag=True, help="Print the mpremote commands, touch no board.")
def deploy_cmd(board: str, port: str, config: Path, dry_run: bool) -> None:
    """Copy the compiled device code, libraries, entry files and config to a board."""
    from ..boards import deploy

    try:
        if dry_run and not port:
            click.echo("deploy: no --port/PORT= given: the commands below say PORT", err=True)
        p = deploy.plan(board, port or ("PORT" if dry_run else ""), config)
        if dry_run:
            for line in p.lines():
                click.echo(line)
            return
        deploy.run(p)
    except deploy.DeployError as exc:
        fail(str(exc))


@click.command("hil")
@click.option("--board", type=BOARDS, required=True, help="The board kind.")
@click.option("--port", default="", help="Serial port of the board.")
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The device config deployed on the board.")
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path),
              required=True, help="Data folder of the running platform service.")
@click.option("--image", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The new image: ESP32 app image or Pico W bundle.")
@click.option("--version", "version", required=True, help="Version the new image carries.")
@click.option("--timeout", type=Finite(min=1), default=600, show_default=True,
              help="Seconds the update may take before it counts as failed.")
@click.option("--table", default=None, metavar="FILE|board",
              help="ESP32: where the OTA slots the image must fit come from: the firmware "
                   "file flashed on the board or its partition table (esptool read-flash "
                   "0x8000 0xc00), or `board` to read it from the board over --port "
                   "(esptool). Default: chips.py, for --flash-size or the board's usual "
                   "flash.")
@click.option("--flash-size", type=click.Choice(["4M", "8M", "16M"]), default=None,
              help="ESP32: the board's flash, for MicroPython's OTA table of that size.")
def hil_cmd(board: str, port: str, config: Path, data_dir: Path, image: Path, version: str,
            timeout: float, table: str | None, flash_size: str | None) -> None:
    """One real update of a connected board through the local platform; JSON result."""
    from ..boards import hil

    try:
        result = hil.run(board, port, config, data_dir, image, version, timeout,
                         echo=lambda s: click.echo(s, err=True), table=table,
                         flash_size=flash_size)
    except hil.HilError as exc:
        fail(str(exc))
    emit_json(result)
    if not result["ok"]:
        raise SystemExit(1)


@click.command("provision")
@click.option("--id", "device", required=True, help="Device id (also its MQTT user name).")
@click.option("--broker-host", required=True, help="Broker host name or address.")
@click.option("--broker-port", type=click.IntRange(1, 65535),
              help="Default 1883, or 8883 with --tls.")
@click.option("--mosquitto", "mosquitto_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder of `fota platform mosquitto-config`: the device's credentials.")
@click.option("--user", help="Broker user (instead of --mosquitto).")
@click.option("--password", help="Broker password (instead of --mosquitto).")
@click.option("--tls", is_flag=True, help="MQTT over TLS (needs --ca).")
@click.option("--ca", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CA certificate for the broker (copied next to the config as ca.pem).")
@click.option("--topic-prefix", help='Default devices/<id>; "" for real CTWing.')
@click.option("--module", help="Module name (default MCU).")
@click.option("--wifi-ssid", help="Wi-Fi network.")
@click.option("--wifi-password", help="Wi-Fi password.")
@click.option("--wdt", "wdt_s", type=Finite(min=0),
              help="Watchdog seconds (0: off); at most 8.388 on a Pico W, 16.777 on a Pico 2 W.")
@click.option("--board", type=BOARDS,
              help="The board this config is for: its limits are checked (a --wdt above "
                   "8.388 s needs an ESP32 board or pico2_w).")
@click.option("--health-deadline", "health_deadline_s", type=Finite(min=1),
              help="Seconds a new image has to prove itself healthy.")
@click.option("--trust", "trust", multiple=True, metavar="DIGEST|KEY.pem",
              help="A signing key the device trusts: its digest or a PEM key file (repeat, "
                   "up to three). Images must then be signed by one of them.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The config file to write (owner-only: it holds passwords).")
def provision_cmd(device: str, broker_host: str, broker_port: int | None,
                  mosquitto_dir: Path | None, user: str | None, password: str | None, tls: bool,
                  ca: Path | None, topic_prefix: str | None, module: str | None,
                  wifi_ssid: str | None, wifi_password: str | None, wdt_s: float | None,
                  health_deadline_s: float | None, board: str | None, trust: tuple[str, ...],
                  output: Path) -> None:
    """Write a device config (fota_config.json for `make deploy CONFIG=...`).

    Every field is checked as the platform and the board will check it (device id rule,
    host name or address, TLS with its CA, topic, Wi-Fi lengths, the board's watchdog
    limit) before anything is written.
    """
    from ..boards import fields, provision

    if mosquitto_dir and user:
        fail("give --mosquitto or --user/--password, not both")
    if password is not None and user is None:
        fail("--password needs --user (or use --mosquitto DIR)")
    try:
        broker_host = fields.check_provision(
            device=device, host=broker_host, tls=tls, ca=ca, topic=topic_prefix, module=module,
            wifi_ssid=wifi_ssid, wifi_password=wifi_password, wdt_s=wdt_s, board=board)
    except fields.FieldError as exc:
        fail(str(exc))
    try:
        if mosquitto_dir:
            user, password = provision.broker_credentials(mosquitto_dir, device)
        cfg = provision.build_config(
            device, broker_host, port=broker_port, user=user, password=password, tls=tls,
            ca="ca.pem" if ca else None, topic_prefix=topic_prefix, module=module,
            wifi_ssid=wifi_ssid, wifi_password=wifi_password, wdt_s=wdt_s,
            health_deadline_s=health_deadline_s,
            download_ca="ca.pem" if ca else None,
            trusted_keys=provision.trusted_digests(trust))
        out = provision.write(cfg, output, ca)
        if trust:
            out["trusted_keys"] = cfg["trusted_keys"]
        emit_json(out)
    except provision.ProvisionError as exc:
        fail(str(exc))


@click.group("board")
def board_group() -> None:
    """Real boards' firmware: make any MicroPython ESP32 firmware OTA-ready."""


@board_group.command("prepare")
@click.argument("firmware", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--flash-size", type=click.Choice(["4M", "8M", "16M"]),
              help="The board's flash (default: what the firmware's bootloader says); 8M and "
                   "16M give bigger OTA slots.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The OTA-ready firmware file to write (flash it once with esptool).")
def prepare_cmd(firmware: Path, flash_size: str | None, output: Path) -> None:
    """Write a copy of a MicroPython ESP32 FIRMWARE.bin with an OTA partition table.

    Checks that the app fits the OTA slots with room to grow; prints the esptool commands
    that flash it once, and JSON with the slots.
    """
    from ..boards import prepare

    try:
        out = prepare.prepare(firmware, output, flash_size)
    except prepare.PrepareError as exc:
        fail(str(exc))
    for line in out["flash_commands"]:
        click.echo(f"flash it once: {line}", err=True)
    emit_json(out)


COMMANDS: list[click.Command] = [build_cmd, typecheck_cmd, deploy_cmd, hil_cmd, board_group]
