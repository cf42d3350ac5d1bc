"""`fota device provision` checks every field as the platform and the board will and says
what to type; board limits on provision and deploy; `make deploy DRY_RUN=...` does what it
says (#13.8, #13.9, #11.4a)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fota_host import paths

FOTA = [sys.executable, "-m", "fota_host"]


def provision(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*FOTA, "device", "provision", "-o", str(tmp_path / "dev.json"),
                           *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("args", "message"), [
    (["--id", "dev-1", "--broker-host", "mqtt://192.168.1.10:1883"],
     "give --broker-host 192.168.1.10 --broker-port 1883"),
    (["--id", "dev-1", "--broker-host", "mqtts://broker.lan:8883"],
     "give --broker-host broker.lan --broker-port 8883 --tls --ca CA_FILE"),
    (["--id", "dev-1", "--broker-host", "192.168.1.10:1883"],
     "give --broker-host 192.168.1.10 --broker-port 1883"),
    (["--id", "dev-1", "--broker-host", "my broker"], "not a host name or IP address"),
    (["--id", "dev 6", "--broker-host", "192.168.1.10"], "invalid device id 'dev 6'"),
    (["--id", "dev-1", "--broker-host", "b.lan", "--tls"], "--tls needs --ca CA_FILE"),
    (["--id", "dev-1", "--broker-host", "b.lan", "--topic-prefix", "devices/+"],
     "--topic-prefix 'devices/+'"),
    (["--id", "dev-1", "--broker-host", "b.lan", "--wifi-ssid", "x" * 33], "--wifi-ssid"),
    (["--id", "dev-1", "--broker-host", "b.lan", "--wifi-ssid", "lab", "--wifi-password",
      "short"], "8 to 63"),
    (["--id", "dev-1", "--broker-host", "b.lan", "--password", "pw"], "--password needs --user"),
    (["--id", "dev-1", "--broker-host", "b.lan", "--wdt", "30"],
     "above the watchdog limit of the Pico W and Pico 2 W (8.388 s): give --board"),
    (["--id", "dev-1", "--broker-host", "b.lan", "--wdt", "2"],
     "--wdt 2: 0 (no watchdog) or at least 4 seconds"),
    (["--id", "dev-1", "--broker-host", "b.lan", "--wdt", "30", "--board", "pico_w"],
     "give --wdt 8 or less"),
])
def test_provision_refuses_what_the_platform_or_board_would(tmp_path: Path, args, message):
    proc = provision(tmp_path, *args)
    assert proc.returncode == 2, proc.stdout
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert "broker.ca" not in proc.stderr              # flags, not config keys
    assert not (tmp_path / "dev.json").exists()


def test_provision_writes_what_it_was_given(tmp_path: Path) -> None:
    proc = provision(tmp_path, "--id", "dev-1", "--broker-host", "192.168.1.10",
                     "--broker-port", "1883", "--wdt", "30", "--board", "esp32",
                     "--wifi-ssid", "lab", "--wifi-password", "12345678")
    assert proc.returncode == 0, proc.stderr
    cfg = json.loads((tmp_path / "dev.json").read_text())
    assert cfg["broker"] == {"host": "192.168.1.10", "port": 1883} and cfg["wdt_s"] == 30


def make_deploy(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", "-C", str(paths.repo_root()),
                           "deploy", *args], capture_output=True, text=True, timeout=300)


def test_make_deploy_dry_run_means_what_it_says(tmp_path: Path) -> None:
    config = tmp_path / "dev.json"
    config.write_text(json.dumps({"device_id": "dev-1", "broker": {"host": "b.lan"}}))
    dry = make_deploy("BOARD=esp32", f"CONFIG={config}", "DRY_RUN=1")
    assert dry.returncode == 0, dry.stderr
    assert "mpremote connect PORT" in dry.stdout and "/dev/tty" not in dry.stdout
    assert "no --port/PORT= given" in dry.stderr
    for off in ("DRY_RUN=0", "DRY_RUN="):
        real = make_deploy("BOARD=esp32", f"CONFIG={config}", off)
        assert real.returncode != 0 and "no serial port given" in real.stderr, off
    real = make_deploy("BOARD=esp32", f"CONFIG={config}", "DRY_RUN=0",
                       f"PORT={tmp_path / 'ttyUSB9'}")
    assert real.returncode != 0 and f"no board at {tmp_path / 'ttyUSB9'}" in real.stderr
    assert "mpremote connect" not in real.stdout
    bad = make_deploy("BOARD=esp32", f"CONFIG={config}", "DRY_RUN=maybe")
    assert bad.returncode != 0 and "DRY_RUN=1" in bad.stderr


def test_deploy_refuses_a_watchdog_above_the_board_limit(tmp_path: Path) -> None:
    config = tmp_path / "dev.json"
    config.write_text(json.dumps({"device_id": "dev-1", "broker": {"host": "b.lan"},
                                  "wdt_s": 30}))
    proc = subprocess.run([*FOTA, "deploy", "--board", "pico_w", "--config", str(config),
                           "--dry-run"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "wdt_s 30" in proc.stderr and "8.388 s" in proc.stderr
    ok = subprocess.run([*FOTA, "deploy", "--board", "esp32", "--config", str(config),
                         "--port", "/dev/ttyUSB3", "--dry-run"], capture_output=True, text=True,
                        timeout=120)
    assert ok.returncode == 0 and "connect /dev/ttyUSB3" in ok.stdout
