# One engine update on the MicroPython unix port, timed in-process (CPU seconds of
# engine.run, imports included), for the CPU ratio benchmark.
import sys
import time

t0 = time.clock()
from fota import engine  # noqa: E402
from fota.esp32slot import Esp32Target  # noqa: E402
from fota.http import HttpSource  # noqa: E402

engine.block_buffer()
url, md5, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
readback = "--no-readback" not in sys.argv
step, reason = getattr(engine, "_run" if "--trace" in sys.argv else "run")(Esp32Target(), HttpSource(url), size, md5, None, None,
                          "fota_journal.json", 1, readback, None, False)
print('{"step": %d, "reason": "%s", "cpu_s": %f}' % (step, reason, time.clock() - t0))
