"""Device-side entry points of the simulation (run on the unix port in the flash folder).

    micropython -m fota_sim update BOARD SOURCE MD5 SIZE [SHA256] [--task N] [--lock-heap]
                                   [--no-readback] [--no-journal] [--ca FILE] [--insecure]
    micropython -m fota_sim launch          (file slots: the boot-time slot choice)
    micropython -m fota_sim agent           (the board's main loop: config, MQTT agent)

`update` prints one JSON line: {"ok", "step", "reason", "bytes"}; exit status 0 on success.
"""
import sys


def file_source(path):
    """A local image file as a resumable engine source."""

    def open_(offset, size):
        f = open(path, "rb")
        f.seek(offset)
        return f, offset

    return open_


def target_for(board):
    if board == "esp32":
        from fota.esp32slot import Esp32Target

        return Esp32Target()
    from fota.fileslot import FileSlotTarget

    return FileSlotTarget("")


def _opt(args, name, default=None):
    if name in args:
        i = args.index(name)
        value = args[i + 1]
        del args[i:i + 2]
        return value
    return default


def _flag(args, name):
    if name in args:
        args.remove(name)
        return True
    return False


def update(args):
    import json

    from fota import engine

    engine.block_buffer()   # first, while the heap is still in one piece
    task = int(_opt(args, "--task", "0"))
    ca_file = _opt(args, "--ca")
    lock_heap = _flag(args, "--lock-heap")
    readback = not _flag(args, "--no-readback")
    journal = None if _flag(args, "--no-journal") else "fota_journal.json"
    insecure = _flag(args, "--insecure")
    trace = _flag(args, "--trace")      # let exceptions through, with a heap map
    board, src, md5, size = args[0], args[1], args[2], int(args[3])
    sha256 = args[4] if len(args) > 4 else None
    done = [0]

    def progress(n, total):
        done[0] = n

    try:
        target = target_for(board)
        if src.startswith("http://") or src.startswith("https://"):
            from fota.http import source as http_source

            ca = None
            if ca_file:
                with open(ca_file, "rb") as f:
                    ca = f.read()
            source = http_source(src, 10000, ca, insecure)
        else:
            source = file_source(src)
        if trace:
            try:
                step, reason = engine._run(target, source, size, md5, sha256, progress,
                                           journal, task, readback, None, lock_heap)
            except MemoryError:
                import micropython

                micropython.mem_info(1)
                raise
        else:
            step, reason = engine.run(target, source, size, md5, sha256, progress, journal,
                                      task, readback, None, lock_heap)
    except Exception as exc:  # noqa: the report must always come out
        step, reason = -1, "%s" % exc
    print(json.dumps({"ok": step == 100, "step": step, "reason": reason, "bytes": done[0]}))
    return 0 if step == 100 else 1


def agent():
    """The board's main loop, as on hardware (fake machine/network underneath)."""
    ms = _poll_ms()
    with open("board") as f:
        board = f.read().strip()
    target = target_for(board)
    health = None
    if board == "esp32":
        # Synthetic images name themselves "fota-sim-fail-health" when they must
        # never pass the health check (fota pack sim-image --fail-health).
        from fota.esp32slot import desc_string

        head = bytearray(0x70)
        target.running.readblocks(0, head, 0)
        failing = desc_string(head, 0x50) == "fota-sim-fail-health"
        health = (lambda: False) if failing else None
    else:
        sys.path.insert(0, "slots/" + target.active)
        try:
            import app

            health = getattr(app, "healthy", None)
        except ImportError:
            pass
    from fota import board as b

    if not ms:
        b.run("fota_config.json", health, target)
    # The unix port's sleep_ms wakes up every millisecond: a fleet of idle simulated
    # boards would burn a core on that. One poll() with a timeout sleeps in one syscall.
    import select

    idle = select.poll()
    b.run("fota_config.json", health, target, app_step=lambda: idle.poll(ms), period_ms=0)


def _poll_ms():
    """The main loop's period from the file `sim_poll_ms` in the flash folder (fleets
    write it); 0 without it: then nothing here costs heap (agent_min_heap_kib)."""
    try:
        with open("sim_poll_ms") as f:
            ms = int(f.read())
    except (OSError, ValueError):
        return 0
    return ms if 1 <= ms <= 1000 else 0


def main(argv):
    cmd = argv[0] if argv else ""
    if cmd == "update":
        return update(argv[1:])
    if cmd == "agent":
        return agent()
    if cmd == "launch":
        from fota import journal
        from fota.fileslot import launch

        cfg = journal.load("fota_config.json") or {}
        slot = launch("", cfg.get("max_trials", 3))
        print(slot)
        return 0
    print("usage: fota_sim update|launch ...")
    return 2


sys.exit(main(sys.argv[1:]))
