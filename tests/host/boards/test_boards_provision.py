"""`fota device provision`: a device config the board accepts, with the broker credentials
the platform's mosquitto generator issued."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

from fota_host.boards import deploy
from fota_host.platform import mosquitto

FOTA = [sys.executable, "-m", "fota_host"]


def provision(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FOTA, "device", "provision", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_config_with_generated_credentials(tmp_path: Path) -> None:
    broker_dir = tmp_path / "broker"
    mosquitto.generate(broker_dir, ["dev-1", "dev-2"])
    issued = json.loads((broker_dir / "credentials.json").read_text())["devices"]["dev-2"]
    out = tmp_path / "dev-2.json"
    proc = provision("--id", "dev-2", "--broker-host", "10.0.0.5", "--mosquitto", broker_dir,
                     "--wifi-ssid", "lab", "--wifi-password", "secret-wifi", "-o", out)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["credentials"] is True
    assert "pw" not in proc.stdout and issued not in proc.stdout   # no secret on stdout
    cfg = json.loads(out.read_text())
    assert cfg["device_id"] == "dev-2"
    assert cfg["broker"] == {"host": "10.0.0.5", "user": "dev-2", "password": issued}
    assert cfg["wifi"] == {"ssid": "lab", "password": "secret-wifi"}
    assert stat.S_IMODE(out.stat().st_mode) == 0o600            # it holds passwords
    # what the board will make of it: the device's own validation
    checked = deploy.load_config(out)
    assert checked["topic_prefix"] == "devices/dev-2" and checked["broker"]["port"] == 1883


def test_unknown_device_in_credentials_is_explained(tmp_path: Path) -> None:
    broker_dir = tmp_path / "broker"
    mosquitto.generate(broker_dir, ["dev-1"])
    proc = provision("--id", "dev-9", "--broker-host", "h", "--mosquitto", broker_dir,
                     "-o", tmp_path / "x.json")
    assert proc.returncode != 0
    assert "no credentials for 'dev-9'" in proc.stderr and "mosquitto-config" in proc.stderr
    assert not (tmp_path / "x.json").exists()


def test_tls_config_carries_the_ca_and_deploys_it(tmp_path: Path) -> None:
    ca = tmp_path / "my-ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    out = tmp_path / "board" / "device.json"
    proc = provision("--id", "d1", "--broker-host", "broker.lan", "--tls", "--ca", ca,
                     "--user", "d1", "--password", "pw", "--topic-prefix", "", "-o", out)
    assert proc.returncode == 0, proc.stderr
    cfg = json.loads(out.read_text())
    assert cfg["broker"]["tls"] is True and cfg["broker"]["ca"] == "ca.pem"
    assert cfg["topic_prefix"] == ""                             # real CTWing: literal topics
    assert (out.parent / "ca.pem").read_bytes() == ca.read_bytes()
    plan = deploy.plan("esp32", "/dev/ttyUSB0", out)
    assert plan.files["ca.pem"] == str(out.parent / "ca.pem")
    assert deploy.load_config(out)["broker"]["port"] == 8883


def test_tls_without_ca_is_refused(tmp_path: Path) -> None:
    proc = provision("--id", "d1", "--broker-host", "h", "--tls", "-o", tmp_path / "c.json")
    assert proc.returncode != 0 and "--tls needs --ca" in proc.stderr  # flags, not config keys
    assert not (tmp_path / "c.json").exists()


def test_bad_device_id_is_refused(tmp_path: Path) -> None:
    proc = provision("--id", "a/b", "--broker-host", "h", "-o", tmp_path / "c.json")
    assert proc.returncode != 0 and "invalid device id" in proc.stderr
