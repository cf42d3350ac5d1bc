"""The user's flow from a new board to a confirmed update, with the commands docs/boards.md
gives and the real mpremote, a simulated board on a pseudo-terminal in place of the board:
`fota device provision`, `make deploy`, the board's own main.py informing the platform,
then `make hil` (an update through the platform, the reboot into it, the confirm)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fota_host import paths
from fota_host.boards import chips, hil
from fota_host.images import synthetic
from fota_host.platform.process import start_platform
from fota_host.sim import flash as simflash
from simboard import Board, device_seen, make, mpremote, provision, wait_for


def deployed(b: Board, cfg: Path) -> None:
    """What `make deploy` puts on the board, read from the board's filesystem."""
    fota = b.root / "lib" / "fota"
    assert (fota / "agent.mpy").is_file() and (fota / "engine.mpy").is_file()
    assert not list(fota.glob("*.py"))
    family = chips.family(b.board)          # an ESP32-S3 gets the ESP32's entry files
    board_files = paths.firmware_dir() / "boards" / family
    for name in ("boot.py", "main.py"):
        assert (b.root / name).read_text() == (board_files / name).read_text()
    assert json.loads((b.root / "fota_config.json").read_text()) == json.loads(cfg.read_text())
    # Pico W firmware has no umqtt: deploy brings it; ESP32 firmware freezes it
    assert (b.root / "lib" / "umqtt" / "simple.mpy").is_file() == (family == "pico_w")


def running(b: Board) -> dict:
    """The version the board runs and whether it is confirmed, from its flash."""
    if chips.family(b.board) == "esp32":
        st = simflash.status(b.flash)
        return {"version": st["version"], "confirmed": not st["pending"]}
    pointer = json.loads((b.root / "fota_boot.json").read_text())
    manifest = b.root / "slots" / pointer["active"] / "manifest.json"
    return {"version": json.loads(manifest.read_text())["version"],
            "confirmed": pointer.get("confirmed", False)}


@pytest.mark.parametrize("kind", ["esp32", "pico_w"])
def test_deploy_then_update_through_the_platform(tmp_path: Path, kind: str) -> None:
    platform = start_platform(tmp_path / "data")
    try:
        device = f"board-{kind.replace('_', '')}"
        cfg = provision(tmp_path, platform.broker, device, kind)
        with Board(tmp_path, kind) as b:
            p = make("deploy", f"BOARD={kind}", f"PORT={b.port}", f"CONFIG={cfg}")
            assert p.returncode == 0, p.stdout + p.stderr
            deployed(b, cfg)
            client = platform.client()
            seen = wait_for("the deployed main.py informs the platform",
                            lambda: device_seen(client, device))
            if kind == "esp32":
                assert seen["version"] == "1.0.0"       # the firmware in the board's flash
            image = tmp_path / "new.bin"
            image.write_bytes(synthetic.sim_image(kind, "2.0.0", None))
            p = make("hil", f"BOARD={kind}", f"PORT={b.port}", f"CONFIG={cfg}",
                     f"DATA={tmp_path / 'data'}", f"IMAGE={image}", "VERSION=2.0.0")
            assert p.returncode == 0, p.stdout + p.stderr
            result = json.loads(p.stdout.strip().splitlines()[-1])
            assert result["ok"] and result["state"] == "succeeded", result
            assert running(b) == {"version": "2.0.0", "confirmed": True}
            assert b.resets("hard") >= 2        # mpremote's reset, then the update's
            wait_for("the platform knows the new version",
                     lambda: device_seen(client, device)["version"] == "2.0.0")
            # the board still answers on its serial line after all of it
            assert mpremote(b.port, "exec", "print('still here')").stdout.strip() == \
                "still here"
    finally:
        platform.stop()


def test_hil_refuses_a_board_that_never_informed(tmp_path: Path) -> None:
    """`make hil` before `make deploy`: the board is there, the agent is not; hil says what
    is missing instead of waiting out a task."""
    platform = start_platform(tmp_path / "data")
    try:
        cfg = provision(tmp_path, platform.broker, "bare-1", "esp32")
        image = tmp_path / "new.bin"
        image.write_bytes(synthetic.sim_image("esp32", "2.0.0", None))
        with Board(tmp_path, "esp32") as b:
            with pytest.raises(hil.HilError, match="bare-1 never informed.*make deploy"):
                hil.run("esp32", b.port, cfg, tmp_path / "data", image, "2.0.0",
                        poll=0.2, echo=lambda _s: None, online_wait=2)
        assert platform.client().list_tasks() == []      # nothing was started
    finally:
        platform.stop()
