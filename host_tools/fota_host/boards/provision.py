"""Device configs for real boards: `fota device provision` writes the one JSON file a board
reads at boot (`fota_config.json`, see firmware/fota/config.py), with per-device broker
credentials taken from `fota platform mosquitto-config`'s credentials.json when given.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..platform.validate import device_id_problem
from . import deploy


class ProvisionError(RuntimeError):
    pass


def broker_credentials(mosquitto_dir: Path, device: str) -> tuple[str, str]:
    """(user, password) issued to `device` by `fota platform mosquitto-config --out DIR`."""
    path = Path(mosquitto_dir) / "credentials.json"
    try:
        creds = json.loads(path.read_text())
    except OSError as exc:
        raise ProvisionError(f"cannot read {path}: {exc}") from None
    except ValueError:
        raise ProvisionError(f"{path} is not JSON") from None
    password = (creds.get("devices") or {}).get(device)
    if not password:
        raise ProvisionError(
            f"{path} has no credentials for {device!r}: run `fota platform mosquitto-config "
            f"--out {mosquitto_dir} --device {device} ...` with the options you used before "
            "(it keeps the passwords already issued and adds the new device)"
        )
    return device, password      # the mosquitto ACL uses the device id as the user name


def build_config(device: str, host: str, *, port: int | None = None, user: str | None = None,
                 password: str | None = None, tls: bool = False, ca: str | None = None,
                 topic_prefix: str | None = None, module: str | None = None,
                 wifi_ssid: str | None = None, wifi_password: str | None = None,
                 wdt_s: float | None = None, health_deadline_s: float | None = None,
                 download_ca: str | None = None,
                 trusted_keys: list[str] | None = None) -> dict[str, Any]:
    if problem := device_id_problem(device):  # the platform's one device-id rule
        raise ProvisionError(problem)
    broker: dict[str, Any] = {"host": host}
    if port is not None:
        broker["port"] = port
    if user is not None:
        broker.update(user=user, password=password or "")
    if tls:
        broker["tls"] = True
    if ca:
        broker["ca"] = ca
    cfg: dict[str, Any] = {"device_id": device, "broker": broker}
    if topic_prefix is not None:
        cfg["topic_prefix"] = topic_prefix
    if module is not None:
        cfg["module"] = module
    if wifi_ssid is not None:
        cfg["wifi"] = {"ssid": wifi_ssid, "password": wifi_password or ""}
    if wdt_s is not None:
        cfg["wdt_s"] = wdt_s
    if health_deadline_s is not None:
        cfg["health_deadline_s"] = health_deadline_s
    if download_ca:
        cfg["download"] = {"ca": download_ca}
    if trusted_keys:
        cfg["trusted_keys"] = trusted_keys
    return cfg


def trusted_digests(items: list[str] | tuple[str, ...]) -> list[str]:
    """Key digests (64 hex) from `--trust` values: a digest, or a PEM key file (private or
    public) whose digest is taken; duplicates dropped, at most three (Secure Boot V2)."""
    from ..images import signing

    out: list[str] = []
    for item in items:
        try:
            if Path(item).is_file():
                digest = signing.key_digest(Path(item))
            else:
                digest = signing.normalize_digest(item)
        except (signing.SigningError, OSError) as exc:
            raise ProvisionError(f"--trust {item!r}: {exc} (give a key digest or a PEM key "
                                 "file)") from None
        if digest not in out:
            out.append(digest)
    if len(out) > 3:
        raise ProvisionError("a device trusts at most three keys (a signature sector holds "
                             "three blocks)")
    return out


def write(cfg: dict[str, Any], output: Path, ca_source: Path | None = None) -> dict[str, Any]:
    """Check `cfg` with the device's own validation, write it (owner-only: it holds
    passwords), copy the CA file next to it under the name the config gives it."""
    try:
        deploy._device_config_check(cfg)
    except deploy.DeployError as exc:
        raise ProvisionError(str(exc)) from None
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    copied = None
    ca_name = cfg["broker"].get("ca")
    if ca_source is not None and ca_name:
        dest = output.resolve().parent / ca_name.lstrip("/")
        if dest.resolve() != Path(ca_source).resolve():
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(Path(ca_source).read_bytes())
        copied = str(dest)
    tmp = output.with_name(f".{output.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(cfg, indent=2) + "\n")
    os.replace(tmp, output)
    return {"file": str(output), "device_id": cfg["device_id"],
            "broker": {k: v for k, v in cfg["broker"].items() if k != "password"},
            "credentials": "password" in cfg["broker"], "ca_file": copied}
