"""`fota pack`: build and check images."""

from __future__ import annotations

from pathlib import Path

import click

from .output import emit_json, fail, write_output

MAX_SIM_IMAGE = 64 * 1024 * 1024


@click.group("pack")
def pack() -> None:
    """Build and validate firmware images and app bundles."""


@pack.command("sim-image")
@click.option("--board", type=click.Choice(["esp32", "esp32s3", "esp32c3", "esp32c6", "pico_w",
                                           "pico2_w"]), default="esp32", show_default=True,
              help="ESP32 app image (of that board's chip) or Pico W app bundle.")
@click.option("--version", "version", required=True, help="Version the image carries.")
@click.option("--size", type=click.IntRange(min=1, max=MAX_SIM_IMAGE),
              help="Exact size in bytes, at most 64 MiB (the platform's package limit;"
                   " more than the board's OTA slot makes an image devices refuse).")
@click.option("--chip", default="esp32", show_default=True, help="ESP32 chip the image is for.")
@click.option("--fail-health", is_flag=True, help="Booted, it never passes the health check.")
@click.option("--payload", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The image's segment data (e.g. a real binary), instead of filler.")
@click.option("--secure-version", type=click.IntRange(0, 0xFFFFFFFF),
              help="Anti-rollback counter (app descriptor; a bundle's manifest.json).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The file to write.")
def sim_image_cmd(board: str, version: str, size: int | None, chip: str, fail_health: bool,
                  payload: Path | None, secure_version: int | None, output: Path) -> None:
    """A synthetic but valid image for simulated devices; prints size, md5, sha256."""
    from ..images import bundle, esp_image, signing, synthetic

    try:
        data = synthetic.sim_image(board, version, size, fail_health, chip,
                                   payload=payload.read_bytes() if payload else None,
                                   secure_version=secure_version)
    except (esp_image.ImageError, bundle.BundleError, signing.SigningError, ValueError) as exc:
        fail(str(exc))
    write_output(output, data)
    out = {"file": str(output), "board": board, "version": version, **synthetic.digests(data)}
    if secure_version is not None:
        out["secure_version"] = secure_version
    emit_json(out)


@pack.command("bundle")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--version", "version", required=True, help="Version the bundle carries.")
@click.option("--no-compile", is_flag=True, help="Ship .py sources instead of .mpy.")
@click.option("--secure-version", type=click.IntRange(0, 0xFFFFFFFF),
              help="Anti-rollback counter, in the bundle's manifest.json.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The file to write.")
def bundle_cmd(folder: Path, version: str, no_compile: bool, secure_version: int | None,
               output: Path) -> None:
    """An app bundle for file slots (Pico W, unix) from an application folder."""
    from ..images import bundle, synthetic

    try:
        data = bundle.from_folder(folder, version, compile_py=not no_compile,
                                  secure_version=secure_version)
    except bundle.BundleError as exc:
        fail(str(exc))
    write_output(output, data)
    out = {"file": str(output), "version": version, **synthetic.digests(data)}
    if secure_version is not None:
        out["secure_version"] = secure_version
    emit_json(out)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        fail(str(exc))


@pack.command("compress")
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The file to write.")
def compress_cmd(image: Path, output: Path) -> None:
    """A compressed image (deflate, resumable chunks) of IMAGE; prints size, md5, sha256,
    kind and the ratio to the full image."""
    from ..images import delta

    data = _read(image)
    if not data:
        fail(f"{image} is empty")
    if delta.is_container(data):
        fail(f"{image} is a {delta.describe(data)['kind']} image already; give the full image")
    packed = delta.compress(data)
    write_output(output, packed)
    emit_json({"file": str(output), **delta.describe(packed)})


@pack.command("delta")
@click.option("--from", "old", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              required=True, help="The image the devices run now (the base).")
@click.option("--to", "new", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              required=True, help="The new full image.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The file to write.")
def delta_cmd(old: Path, new: Path, output: Path) -> None:
    """A delta image that turns OLD into NEW (detools sequential patch, deflated); prints
    size, md5, sha256, kind and the ratio to the full image."""
    from ..images import delta

    base, target = _read(old), _read(new)
    for path, data in ((old, base), (new, target)):
        if not data:
            fail(f"{path} is empty")
        if delta.is_container(data):
            fail(f"{path} is a compressed or delta image; give full images")
    packed = delta.delta(base, target)
    try:
        delta.decode(packed, base)
    except delta.FormatError as exc:
        fail(f"the delta does not rebuild {new}: {exc}")
    write_output(output, packed)
    if len(packed) >= len(target):   # the platform's add-delta refuses such a delta
        click.echo(f"warning: the delta ({len(packed)} bytes) is not smaller than {new} "
                   f"({len(target)} bytes): send the full image (or a compressed one) "
                   "instead; the images have too little in common", err=True)
    emit_json({"file": str(output), **delta.describe(packed)})


@pack.command("esp32")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--version", "version",
              help="Version the image must carry (its app descriptor's; default: any).")
@click.option("--chip", type=click.Choice(["esp32", "esp32s2", "esp32s3", "esp32c3", "esp32c6"]),
              default="esp32", show_default=True, help="Chip of the boards.")
@click.option("--layout", type=click.Choice(["esp32-generic-ota", "8mib-ota", "16mib-ota"]),
              default="esp32-generic-ota", show_default=True,
              help="Partition table on the boards (decides the OTA slot size).")
@click.option("-o", "--output", "app_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the app image taken from a combined firmware.bin "
                   "(default: FILE with the suffix .app-bin).")
@click.option("--register", is_flag=True, help="Also store it as a platform package.")
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Platform data folder (with --register).")
@click.option("--name", help="Package name (with --register; default: the version).")
@click.option("--module", help="Module (with --register; default MCU).")
@click.option("--product", help="Product (with --register).")
@click.option("--sign", type=click.Choice(["md5", "sha256"]), default="md5", show_default=True,
              help="With --register: the digest the notice carries (MD5 always; sha256 "
                   "adds SHA-256). Not code signing (`fota sign`).")
def esp32_cmd(file: Path, version: str | None, chip: str, layout: str, app_out: Path | None,
              register: bool, data_dir: Path | None, name: str | None, module: str | None,
              product: str | None, sign: str) -> None:
    """Validate a MicroPython ESP32 app image for OTA; prints size, md5, sha256, version, chip.

    FILE is the app image (micropython.bin), or a combined firmware.bin (bootloader,
    partition table, app): its app image is then written to --output (default
    FILE.app-bin) and checked, and "extracted_from" names the partition it came from.
    """
    from ..images import esp32check, esp_image

    if register and data_dir is None:
        fail("--register needs --data DIR (the platform data folder)")
    try:
        facts, app = esp32check.check_file(_read(file), version, chip, layout)
    except esp_image.ImageError as exc:
        fail(f"{file}: {exc}")
    if "extracted_from" in facts:
        source = file
        file = app_out or file.with_suffix(".app-bin")
        try:
            file.write_bytes(app)
        except OSError as exc:
            fail(f"writing the app image to {file}: {exc}")
        click.echo(f"pack esp32: {source} is a combined firmware file; its app image "
                   f"(partition {facts['extracted_from']['partition']} at flash "
                   f"0x{facts['extracted_from']['flash_offset']:x}) is written to {file}",
                   err=True)
        facts["source"] = str(source)
    out = {"file": str(file), **facts}
    if register:
        from ..platform.client import connect
        from ..platform.validate import PlatformError

        try:
            ops = connect(data_dir)
            try:
                out["package"] = ops.create_package(file=str(file), version=facts["version"],
                                                    name=name,
                                                    module=module, product=product, sign=sign)
            finally:
                ops.close()
        except (PlatformError, OSError) as exc:
            fail(f"registering with the platform failed: {exc}")
    emit_json(out)


COMMANDS: list[click.Command] = [pack]
