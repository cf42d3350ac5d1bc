"""`make demo` as a newcomer meets it: a tour whose commands fit 80 columns and can be run
again by hand in the kept folder (`KEEP=1`), and a Ctrl-C that ends in one line saying
what was cleaned up (#13.10, #13.11)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import psutil
from fota_host import paths
from helpers import Output, wait_for

DEMO = [sys.executable, "-m", "fota_host.sim.demo"]


def test_make_demo_keep_is_a_tour_that_fits_80_columns(tmp_path: Path) -> None:
    # 4 boards: two per kind, so each task runs in two waves; ESP32 demo-001 runs the
    # 1.0.1 image (the delta's base), demo-003 still 1.0.0 (the full image)
    proc = subprocess.run(["make", "--no-print-directory", "-C", str(paths.repo_root()), "demo",
                           "KEEP=1", "DEVICES=4"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "80"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    result = json.loads(lines[-1])
    assert result["succeeded"] == 4 and result["waves"] == 2 and result["bytes_saved"] > 0
    kept = Path(re.search(r"the work folder is kept: (\S+)", proc.stderr).group(1))
    try:
        assert (kept / "platform").is_dir() and (kept / "images").is_dir()
        # commands, continuation lines and the summary fit 80 columns (the last line is
        # the JSON object for scripts)
        assert all(len(line) <= 80 for line in lines[:-1]), [x for x in lines if len(x) > 80]
        commands = [line for line in lines if line.startswith("$ fota")]
        for shown in ("$ fota platform serve", "$ fota keys generate", "$ fota sign",
                      "$ fota sim fleet", "$ fota package create", "$ fota package add-delta",
                      "$ fota task start"):
            assert any(c.startswith(shown) for c in commands), shown
        # the console's address and how to sign in, before the first command after serve
        console = next(i for i, x in enumerate(lines) if "/console" in x)
        assert re.search(r"web console http://127\.0\.0\.1:\d+/console$", lines[console])
        assert "platform/admin.token" in lines[console + 1]
        assert (kept / "platform" / "admin.token").read_text().strip()
        assert console < lines.index("$ fota keys generate -o release.pem")
        assert sum("--wave 1 --wave rest" in line for line in lines) == 2
        table = lines[next(i for i, x in enumerate(lines) if x.startswith("Upgrade to 2.0.0")):]
        rows = [row.split() for row in table if row.strip().startswith("demo-")]
        assert len(rows) == 4 and all("succeeded" in r and "yes" in r for r in rows)
        kinds = {r[0]: r[3] for r in rows}
        assert kinds == {"demo-001": "delta", "demo-002": "full", "demo-003": "full",
                         "demo-004": "full"}, rows
        assert sorted(r[2] for r in rows) == ["1", "1", "2", "2"]      # the waves
        assert f"saved {result['bytes_saved']:,} bytes" in " ".join(table)
        # a command from the tour, run again by hand in the kept folder
        start = lines.index("$ fota task start --data platform 1")
        assert start > 0

        def fota(*args: str) -> dict:
            out = subprocess.run([sys.executable, "-m", "fota_host", *args], cwd=kept,
                                 capture_output=True, text=True, timeout=60)
            return json.loads(out.stdout)

        shown = fota("task", "show", "--data", "platform", "1", "--json")
        assert shown["state"] == "finished"
        assert [w["state"] for w in shown["waves"]] == ["succeeded"] * 2, shown["waves"]
        assert {d["device"]: d["kind"] for d in shown["devices"]} == {
            "demo-001": "delta", "demo-003": "full"}
        digest = fota("keys", "digest", "release.pem")["key_digest"]
        new = [p for p in fota("package", "list", "--data", "platform", "--json")
               if p["version"] == "2.0.0"]
        assert len(new) == 2 and all(p["signed"] and p["key_digests"] == [digest] for p in new)
    finally:
        import shutil

        shutil.rmtree(kept, ignore_errors=True)


def test_ctrl_c_during_the_demo_is_one_line_and_cleans_up() -> None:
    proc = subprocess.Popen([*DEMO, "--devices", "2", "--slow"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    out = Output(proc)
    try:
        # --slow: the downloads take seconds; interrupt while the boards upgrade
        assert out.wait("Start the tasks", timeout=120), out.lines
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 3                       # the platform and two devices
        os.killpg(proc.pid, signal.SIGINT)              # Ctrl-C: the whole process group
        proc.wait(60)
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    text = out.text() + err
    assert proc.returncode == 130
    assert "Traceback" not in text and "KeyboardInterrupt" not in text
    assert len(err.strip().splitlines()) == 1, err
    message = re.fullmatch(r"demo: interrupted \(SIGINT\); stopped 2 devices and the platform; "
                           r"removed (\S+)\n", err)
    assert message, err
    assert not Path(message.group(1)).exists()
    wait_for(lambda: not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE
                             for c in children), timeout=30, what="no process of the demo left")


def test_the_command_lines_break_between_arguments() -> None:
    from fota_host.sim.tour import command_lines

    words = ["task", "create", "--data", "platform", "--package", "a" * 20, "--name",
             "esp32 to 2.0.0", "--desc", "a description that is rather long too"]
    lines = command_lines(words)
    assert all(len(line) <= 78 for line in lines)
    assert all(line.endswith(" \\") for line in lines[:-1])
    joined = " ".join(line.removesuffix(" \\").strip() for line in lines)
    assert joined.split(" ", 1)[1] == " ".join(
        w if " " not in w else f"'{w}'" for w in ["fota", *words])


def test_the_tours_sim_fleet_trust_gives_every_device_the_key(tmp_path: Path) -> None:
    from fota_host.images import signing

    digest = signing.key_digest(signing.generate_key(tmp_path / "release.pem"))
    proc = subprocess.run([sys.executable, "-m", "fota_host", "sim", "fleet", "--count", "2",
                           "--broker", "mqtt://127.0.0.1:1", "--data", str(tmp_path / "fleet"),
                           "--trust", digest, "--trust", str(tmp_path / "release.pem"),
                           "--for", "1"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for dev in ("dev-001", "dev-002"):
        config = json.loads((tmp_path / "fleet" / dev / "fota_config.json").read_text())
        assert config["trusted_keys"] == [digest], config
