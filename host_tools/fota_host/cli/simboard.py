"""`fota sim board`: a simulated board on a serial line (a pseudo-terminal)."""

from __future__ import annotations

from pathlib import Path

import click

from .output import emit_json_line, fail

# Every board of boards/chips.py (tests/host/boards/test_sim_board_kinds.py keeps them equal).
SIM_BOARDS = ["esp32", "esp32s3", "esp32c3", "esp32c6", "pico_w", "pico2_w"]


@click.command("board")
@click.option("--board", type=click.Choice(SIM_BOARDS), required=True,
              help="The board the simulation behaves as: its chip id, OTA slot size "
                   "and watchdog limit (boards/chips.py).")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="The board's filesystem (created if missing); on ESP32 the flash "
                   "partitions live beside it in ROOT.flash.")
@click.option("--link", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Create this symlink to the serial line (else use the printed port).")
@click.option("--version", "version", default="1.0.0", show_default=True,
              help="ESP32: the firmware version a new board's flash ships with.")
@click.option("--heap", default="256K", show_default=True,
              help="MicroPython heap of the board (-X heapsize).")
@click.option("--log", "log_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Write the board's resets and boots to this file.")
@click.option("--console", "console_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Copy everything the board prints to this file.")
def board_cmd(board: str, root: Path, link: Path | None, version: str, heap: str,
              log_path: Path | None, console_path: Path | None) -> None:
    """A simulated board behind a pseudo-terminal, for mpremote and `make deploy`.

    Prints {"port": ...} once the serial line is ready, then runs until SIGTERM or
    Ctrl-C. Soft and hard resets behave as on the board; see docs/boards.md,
    "Rehearse without a board".
    """
    import signal

    from ..sim.board import SimBoard
    from ..sim.flash import SimError

    log = open(log_path, "a") if log_path else None  # noqa: SIM115 - lives as long as the board
    con = open(console_path, "a") if console_path else None  # noqa: SIM115 - the same
    try:
        sim = SimBoard(board, root, link=link, version=version, heap=heap, log=log,
                       console_log=con)
    except (SimError, ValueError, OSError) as exc:
        fail(f"sim board: {exc}")
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda _s, _f: sim.stop())
    emit_json_line(sim.describe())
    try:
        sim.run()
    except SimError as exc:
        fail(f"sim board: {exc}")
    finally:
        for f in (log, con):
            if f:
                f.close()
    click.echo(f"sim board: {board} on {sim.port} stopped", err=True)
