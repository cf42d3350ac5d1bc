"""The documented secured setup, as written (as root too): `fota platform mosquitto-config`,
`mosquitto -c mq/mosquitto.conf`, the platform on it, and a fleet whose devices log in
with the credentials the generator issued; a device without them is refused (#13.7)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from helpers import free_port, mosquitto_bin, wait_for, wait_port

FOTA = [sys.executable, "-m", "fota_host"]


def fota(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([*FOTA, *args], capture_output=True, text=True, timeout=120, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return proc


def background(args: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    with open(log, "w") as f:
        return subprocess.Popen(args, cwd=cwd, stdout=f, stderr=subprocess.STDOUT)


def test_secured_fleet_upgrades_with_generated_credentials(tmp_path: Path) -> None:
    port = free_port()
    out = json.loads(fota("platform", "mosquitto-config", "--out", "mq", "--device", "sec-001",
                          "--device", "sec-002", "--port", str(port), "--bind", "127.0.0.1",
                          cwd=tmp_path).stdout)
    procs: list[subprocess.Popen] = []
    try:
        # exactly as the docs say, as whoever runs the tests (root in CI)
        broker = background([mosquitto_bin(), "-c", "mq/mosquitto.conf"], tmp_path,
                            tmp_path / "mosquitto.log")
        procs.append(broker)
        wait_port(port, timeout=20)
        assert broker.poll() is None, (tmp_path / "mosquitto.log").read_text()
        procs.append(background([*FOTA, "platform", "serve", "--data", "plat", "--broker",
                                 out["platform_broker"], "--http-port", "0"], tmp_path,
                                tmp_path / "serve.log"))
        wait_for(lambda: (tmp_path / "plat" / "service.json").exists(), timeout=60,
                 what="the platform on mosquitto")
        url = f"mqtt://127.0.0.1:{port}"
        fleet = subprocess.Popen([*FOTA, "sim", "fleet", "--count", "2", "--prefix-id", "sec-",
                                  "--boards", "esp32", "--broker", url, "--credentials",
                                  "mq/credentials.json", "--data", "fleet", "--version", "1.0.0",
                                  "--health-deadline", "20"], cwd=tmp_path,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(fleet)
        intruder = background([*FOTA, "sim", "device", "--flash", "intruder", "--id", "sec-003",
                               "--broker", url, "--version", "1.0.0"], tmp_path,
                              tmp_path / "intruder.log")
        procs.append(intruder)

        def seen() -> set[str]:
            listed = fota("device", "list", "--data", "plat", "--json", cwd=tmp_path).stdout
            return {d["id"] for d in json.loads(listed)}

        wait_for(lambda: {"sec-001", "sec-002"} <= seen(), timeout=60,
                 what="both fleet devices logged in and informed")
        wait_for(lambda: "not authorised" in (tmp_path / "mosquitto.log").read_text(),
                 timeout=60, what="mosquitto refusing the device without credentials")
        assert "sec-003" not in seen()

        fota("pack", "sim-image", "--board", "esp32", "--version", "2.0.0", "--size", "200000",
             "-o", "v2.bin", cwd=tmp_path)
        pkg = json.loads(fota("package", "create", "--data", "plat", "--file", "v2.bin",
                              "--version", "2.0.0", cwd=tmp_path).stdout)
        task = json.loads(fota("task", "create", "--data", "plat", "--package", pkg["id"],
                               "--name", "secure", cwd=tmp_path).stdout)
        tid = str(task["id"])
        fota("task", "add-devices", "--data", "plat", tid, "sec-001", "sec-002", cwd=tmp_path)
        fota("task", "start", "--data", "plat", tid, cwd=tmp_path)
        watched = subprocess.run([*FOTA, "task", "watch", "--data", "plat", tid, "--json",
                                  "--timeout", "120"], cwd=tmp_path, capture_output=True,
                                 text=True, timeout=180)
        last = json.loads(watched.stdout.splitlines()[-1])
        assert watched.returncode == 0, watched.stdout[-2000:]
        assert last["state"] == "finished" and last["counts"] == {"succeeded": 2}
        fleet.send_signal(signal.SIGTERM)
        fleet_out, _ = fleet.communicate(timeout=60)
        versions = json.loads(fleet_out.strip().splitlines()[-1])["versions"]
        assert versions == {"sec-001": "2.0.0", "sec-002": "2.0.0"}
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()


def test_fleet_credentials_must_cover_every_device(tmp_path: Path) -> None:
    creds = tmp_path / "credentials.json"
    creds.write_text(json.dumps({"platform": {}, "devices": {"sec-001": "pw"}}))
    proc = subprocess.run([*FOTA, "sim", "fleet", "--count", "2", "--prefix-id", "sec-",
                           "--broker", "mqtt://127.0.0.1:1", "--credentials", str(creds),
                           "--data", str(tmp_path / "fleet")], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "no password for sec-002" in proc.stderr
    assert "mosquitto-config" in proc.stderr and not (tmp_path / "fleet").exists()
    creds.write_text("[1]")
    proc = subprocess.run([*FOTA, "sim", "fleet", "--count", "1", "--broker",
                           "mqtt://127.0.0.1:1", "--credentials", str(creds), "--data",
                           str(tmp_path / "fleet")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "not the credentials.json" in proc.stderr
