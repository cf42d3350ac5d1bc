# The smallest program that runs one engine update (MicroPython unix port), for
# engine_min_heap_kib: buffer first, then the engine, target and HTTP source.
import sys

from fota import engine

engine.block_buffer()
from fota.esp32slot import Esp32Slot  # noqa: E402
from fota.http import source  # noqa: E402

step, reason = engine.run(Esp32Slot(), source(sys.argv[1]), int(sys.argv[3]), sys.argv[2],
                          None, None, "fota_journal.json", 1)
print('{"step": %d, "reason": "%s"}' % (step, reason))
