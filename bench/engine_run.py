# Engine updates on the MicroPython unix port for the benchmarks: repeats the same
# update N times into the same simulated flash (boot selection reset in between)
# and prints CPU seconds of engine.run, with the simulated bootloader's image
# validation in set_boot() (ESP-IDF's job on a board) timed separately.
import os
import sys
import time

from fota import engine
from fota.esp32slot import Esp32Slot
from fota.http import source

engine.block_buffer()
url, md5, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
repeat = int(sys.argv[4]) if len(sys.argv) > 4 else 1
readback = "--no-readback" not in sys.argv
switch_cpu = [0.0]


def reset_boot():
    with open("otadata.json", "w") as f:
        f.write('{"boot": "ota_0", "states": {"ota_0": "valid", "ota_1": "undefined"}}')
    try:
        os.remove("fota_trial.json")
    except OSError:
        pass


cpu = 0.0
step, reason = 0, ""
for _ in range(repeat):
    reset_boot()
    slot = Esp32Slot()
    real_switch = slot.switch

    def timed_switch(info):
        t = time.clock()
        try:
            real_switch(info)
        finally:
            switch_cpu[0] += time.clock() - t

    slot.switch = timed_switch
    t0 = time.clock()
    step, reason = engine.run(slot, source(url), size, md5, None, None,
                              "fota_journal.json", 1, readback)
    cpu += time.clock() - t0
    if step != 100:
        break
print('{"step": %d, "reason": "%s", "cpu_s": %f, "switch_cpu_s": %f}' % (
    step, reason, cpu, switch_cpu[0]))
