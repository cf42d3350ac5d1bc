"""`micropython -m fota_sim update ...`: one engine update into the simulated flash.

Prints one JSON line: {"ok", "step", "reason", "bytes"}; exit status 0 on success.
"""


def file_source(path):
    """A local image file as a resumable engine source."""

    def open_(offset, size):
        f = open(path, "rb")
        f.seek(offset)
        return f, offset

    return open_


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
    allow_unsigned = _flag(args, "--allow-unsigned")
    trusted = []
    while "--trust" in args:
        trusted.append(_opt(args, "--trust"))
    board, src, md5, size = args[0], args[1], args[2], int(args[3])
    sha256 = args[4] if len(args) > 4 else None
    done = [0]

    def progress(n, total):
        done[0] = n

    try:
        # (not sim_agent.slot_for: this command loads no more code than it needs)
        if board == "esp32":
            from fota.esp32slot import Esp32Slot

            slot = Esp32Slot()
        else:
            from fota.fileslot import FileSlot

            slot = FileSlot("")
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
                step, reason = engine.update(slot, source, size, md5, sha256, progress,
                                             journal, task, readback, trusted, lock_heap,
                                             allow_unsigned)
            except MemoryError:
                import micropython

                micropython.mem_info(1)
                raise
        else:
            step, reason = engine.run(slot, source, size, md5, sha256, progress, journal,
                                      task, readback, trusted, lock_heap, allow_unsigned)
    except Exception as exc:  # noqa: BLE001 - the report must always come out
        if trace:
            import sys

            sys.print_exception(exc)
        step, reason = -1, "%s" % exc
    print(json.dumps({"ok": step == 100, "step": step, "reason": reason, "bytes": done[0]}))
    return 0 if step == 100 else 1
