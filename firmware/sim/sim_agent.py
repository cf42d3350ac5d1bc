"""`micropython -m fota_sim agent`: the board's main loop, as on hardware (fake
machine/network underneath). Kept apart from the other sim commands so a simulated
board loads no more code than a real one does."""
import sys


def slot_for(board):
    if board == "esp32":
        from fota.esp32slot import Esp32Slot

        return Esp32Slot()
    from fota.fileslot import FileSlot

    return FileSlot("")


def main():
    """The board's main loop, as on hardware (fake machine/network underneath)."""
    ms = _poll_ms()
    with open("board") as f:
        board = f.read().strip()
    slot = slot_for(board)
    health = None
    if board == "esp32":
        # Synthetic images name themselves "fota-sim-fail-health" when they must
        # never pass the health check (fota pack sim-image --fail-health).
        from fota.esp32slot import desc_string

        head = bytearray(0x70)
        slot.running.readblocks(0, head, 0)
        failing = desc_string(head, 0x50) == "fota-sim-fail-health"
        health = (lambda: False) if failing else None
    else:
        sys.path.insert(0, "slots/" + slot.active)
        try:
            import app

            health = getattr(app, "healthy", None)
        except ImportError:
            pass
    from fota import board

    agent = board.start("fota_config.json", health, slot)
    del board  # start-up code only: start() unloaded it, this frees its RAM for the loop
    from fota.agent import loop

    if not ms:
        loop(agent)
    # The unix port's sleep_ms wakes up every millisecond: a fleet of idle simulated
    # boards would burn a core on that. One poll() with a timeout sleeps in one syscall.
    import select

    idle = select.poll()
    loop(agent, lambda: idle.poll(ms), 0)


def _poll_ms():
    """The main loop's period from the file `sim_poll_ms` in the flash folder (fleets
    write it); 0 without it: then nothing here costs heap (agent_min_heap_kib)."""
    try:
        with open("sim_poll_ms") as f:
            ms = int(f.read())
    except (OSError, ValueError):
        return 0
    return ms if 1 <= ms <= 1000 else 0
