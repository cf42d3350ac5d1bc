"""`make deploy` over a board that already has the agent, and a deploy cut off half-way:
what the user meets on a real board, rehearsed on a simulated one with the real mpremote."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from fota_host import paths
from fota_host.platform.process import start_platform
from simboard import ROOT, Board, device_seen, kill_tree, make, mpremote, provision, wait_for
from test_sim_board_deploy import deployed


def test_deploy_over_an_older_agent(tmp_path: Path) -> None:
    """An agent installed the old way (sources as .py, a module since retired) runs on the
    board; `make deploy` replaces all of it and the board comes back with the new one."""
    platform = start_platform(tmp_path / "data")
    try:
        cfg = provision(tmp_path, platform.broker, "old-1", "esp32")
        root = tmp_path / "board"
        shutil.copytree(paths.firmware_dir() / "fota", root / "lib" / "fota")
        (root / "lib" / "fota" / "retired.py").write_text("RETIRED = True\n")
        for name in ("boot.py", "main.py"):
            shutil.copy(paths.firmware_dir() / "boards" / "esp32" / name, root / name)
        shutil.copy(cfg, root / "fota_config.json")
        with Board(tmp_path, "esp32") as b:
            client = platform.client()
            old = wait_for("the older agent informs", lambda: device_seen(client, "old-1"))
            p = make("deploy", "BOARD=esp32", f"PORT={b.port}", f"CONFIG={cfg}")
            assert p.returncode == 0, p.stdout + p.stderr
            deployed(b, cfg)                # only .mpy: no stale .py shadows the new code
            assert not (b.root / "lib" / "fota" / "retired.py").exists()
            wait_for("the new agent informs after the deploy's reset",
                     lambda: device_seen(client, "old-1", after=old["last_seen"]))
    finally:
        platform.stop()


def test_deploy_cut_off_half_way_is_repaired_by_the_next(tmp_path: Path) -> None:
    """mpremote killed while it copies the package: the board still boots to a REPL
    mpremote reaches, and the next `make deploy` puts a working agent back."""
    platform = start_platform(tmp_path / "data")
    try:
        cfg = provision(tmp_path, platform.broker, "cut-1", "pico_w")
        with Board(tmp_path, "pico_w") as b:
            deploy = ["deploy", "BOARD=pico_w", f"PORT={b.port}", f"CONFIG={cfg}"]
            assert make(*deploy).returncode == 0
            client = platform.client()
            first = wait_for("the agent informs", lambda: device_seen(client, "cut-1"))
            fota = b.root / "lib" / "fota"
            proc = subprocess.Popen(["make", "-s", "-C", str(ROOT), *deploy],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    start_new_session=True)
            try:
                # the old package is removed first, then copied file by file: cut it there
                wait_for("the copy under way", lambda: fota.is_dir() and
                         0 < len(list(fota.iterdir())) < 5 and proc.poll() is None, every=0.01)
            finally:
                kill_tree(proc.pid)
                proc.wait()
            assert not (fota / "engine.mpy").exists()           # really half-way
            # the user resets the board: main.py fails on the missing modules, the REPL stays
            assert mpremote(b.port, "reset").returncode == 0
            wait_for("the board boots", lambda: b.resets("hard") >= 2)
            p = mpremote(b.port, "resume", "exec", "print('alive')")
            assert p.returncode == 0 and p.stdout.strip() == "alive", p
            t = time.time()
            p = make(*deploy)
            assert p.returncode == 0, p.stdout + p.stderr
            deployed(b, cfg)
            seen = wait_for("the repaired agent informs",
                            lambda: device_seen(client, "cut-1", after=max(t, first["last_seen"])))
            assert seen["online"]
    finally:
        platform.stop()
