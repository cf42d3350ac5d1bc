"""What a newcomer's walk-through of `fota` found (#13.14-20): fault flags that would be
ignored are refused, an armed fault that never fires says so, a missing data folder says
what to do, help texts say what --sign is, 80-column tables keep names whole, a device
that never reported has no last_report, and a sub-task back to pending drops its step."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_for
from test_cli_tasks import Device

FOTA = [sys.executable, "-m", "fota_host"]


def fota(*args: str, columns: int = 200, code: int | None = 0) -> subprocess.CompletedProcess:
    proc = subprocess.run([*FOTA, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": str(columns)})
    if code is not None:
        assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc


def fota_json(*args: str) -> Any:
    return json.loads(fota(*args).stdout)


@pytest.mark.parametrize(("flags", "missing"), [
    (("--http-rate", "100"), "--http-proxy"),
    (("--http-corrupt-at", "5"), "--http-proxy"),
    (("--http-upstream", "http://127.0.0.1:1"), "--http-proxy"),
    (("--offline-for", "3"), "--offline"),
    (("--pause-for", "3"), "--pause"),
])
def test_a_fault_flag_without_the_flag_it_needs_is_refused(tmp_path: Path, flags, missing):
    proc = fota("sim", "fleet", "--count", "1", "--broker", "mqtt://127.0.0.1:1",
                "--data", str(tmp_path / "fleet"), "--for", "1", *flags, code=2)
    assert f"{flags[0]} needs {missing}" in proc.stderr
    assert not (tmp_path / "fleet").exists()                   # nothing was started


def test_a_power_cut_that_never_fires_says_so(tmp_path: Path) -> None:
    # no broker: no download ever starts, so the armed power cut cannot fire
    proc = fota("sim", "fleet", "--count", "1", "--broker", "mqtt://127.0.0.1:1",
                "--data", str(tmp_path / "fleet"), "--power-cut", "1", "--for", "2")
    assert "fleet: 1 device under" in proc.stderr
    events = json.loads(proc.stdout)["events"]
    assert any("power cut armed for dev-001 never fired" in e for e in events), events


def test_a_missing_data_folder_says_what_to_do(tmp_path: Path) -> None:
    image = tmp_path / "a.bin"
    image.write_bytes(b"x" * 1000)
    proc = fota("package", "create", "--data", str(tmp_path / "pdata"), "--file", str(image),
                "--version", "1.0.0", code=None)
    assert proc.returncode != 0
    assert f"fota platform serve --data {tmp_path / 'pdata'}" in proc.stderr


def test_help_names_ctwing_and_says_what_sign_is() -> None:
    root = " ".join(fota("--help").stdout.split())
    assert "CTWing's console" in root and "the console's" not in root
    sign = " ".join(fota("package", "create", "--help").stdout.split())
    assert "Signature method" not in sign
    assert "MD5 always; sha256 adds SHA-256" in sign and "fota sign" in sign


def test_tables_at_80_columns_last_report_and_a_reset_step(platform, tmp_path: Path) -> None:
    d = str(tmp_path / "plat")
    image = tmp_path / "v2.bin"
    image.write_bytes(os.urandom(20_000))
    pkg = fota_json("package", "create", "--data", d, "--file", str(image), "--version",
                    "2.0.0", "--name", "demo-esp32")
    task = fota_json("task", "create", "--data", d, "--package", pkg["id"], "--name",
                     "a rollout with a rather long name for an 80 column terminal")
    tid = str(task["id"])
    added = fota_json("task", "add-devices", "--data", d, tid, "demo-esp32-001",
                      "demo-esp32-002")
    sub = {r["device"]: r["subtask"] for r in added}
    cut = Device("demo-esp32-002", platform.broker)      # demo-esp32-001 never connects
    try:
        fota_json("task", "start", "--data", d, tid)
        wait_for(lambda: cut.notices, timeout=30, what="the notice")

        def row(device: str) -> dict[str, Any]:
            shown = fota_json("task", "show", "--data", d, tid, "--json")["devices"]
            return next(x for x in shown if x["device"] == device)

        wait_for(lambda: row("demo-esp32-001")["notified"], timeout=30, what="a notice")
        assert row("demo-esp32-001")["last_report"] is None          # it never reported
        cut.send("progress", sub["demo-esp32-002"], step=40, desc="downloading")
        wait_for(lambda: row("demo-esp32-002")["step"] == 40, timeout=30, what="step 40")
        assert row("demo-esp32-002")["last_report"] is not None
        # a power cut: the device comes back on its old version without the upgrade
        cut.send("inform", -1, version="1.0.0")
        wait_for(lambda: row("demo-esp32-002")["state"] == "pending", timeout=30,
                 what="back to pending")
        assert row("demo-esp32-002")["step"] == 0

        lines = fota("package", "list", "--data", d, columns=80).stdout.splitlines()
        assert any(re.search(r"\bdemo-esp32\s*$", x) for x in lines), lines
        shown = fota("task", "show", "--data", d, tid, columns=80).stdout.splitlines()
        assert all(len(x) <= 80 for x in shown), shown
        assert sum("demo-esp32-00" in x for x in shown) == 2, shown  # each id whole
        assert len([x for x in shown if x.strip().startswith("task ")]) == 1  # one-line title
        # piped with no width given (a log, a script): the title is whole, wrapped
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        piped = subprocess.run([*FOTA, "task", "show", "--data", d, tid], env=env,
                               capture_output=True, text=True, timeout=120).stdout
        assert "…" not in piped and "2.0.0: running" in " ".join(piped.split()), piped
        out = fota("task", "watch", "--data", d, tid, "--timeout", "1", columns=80,
                   code=3).stdout
        assert out.endswith("\n"), out[-200:]   # piped: the last line is a whole line
        watched = out.splitlines()
        assert any("demo-esp32-001" in x for x in watched), watched
    finally:
        cut.stop()
