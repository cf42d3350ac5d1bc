# The reference for the engine benchmarks, run on the MicroPython unix port: the
# barest possible updater, socket -> md5 -> writeblocks, with nothing else (no
# journal, no checks, no read-back, no boot switch). Repeats N times and prints
# the CPU seconds of the loops.
import hashlib
import socket
import sys
import time
from esp32 import Partition

host, port, path, size = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
repeat = int(sys.argv[5]) if len(sys.argv) > 5 else 1
buf = memoryview(bytearray(4096))
part = Partition(Partition.RUNNING).get_next_update()
cpu = 0.0
for _ in range(repeat):
    t0 = time.clock()
    s = socket.socket()
    s.connect(socket.getaddrinfo(host, port)[0][-1])
    s.write(b"GET /" + path.encode() + b" HTTP/1.0\r\n\r\n")
    while s.readline() not in (b"\r\n", b""):
        pass
    h = hashlib.md5()
    n = 0
    left = size
    while left > 0:
        got = s.readinto(buf) if left >= 4096 else s.readinto(buf, left)
        h.update(buf if got == 4096 else buf[:got])
        part.writeblocks(n, buf)
        n += 1
        left -= got
    s.close()
    h.digest()
    cpu += time.clock() - t0
print('{"cpu_s": %f}' % cpu)
