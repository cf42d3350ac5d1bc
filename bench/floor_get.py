# The floor of one simulated device's update, run on the MicroPython unix port: start
# the interpreter, GET the image, MD5 it. Nothing else (no MQTT, no flash, no checks,
# no reboot): no FOTA loop made of simulated devices can be faster than this.
import hashlib
import socket
import sys

host, port, path, size = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
buf = memoryview(bytearray(4096))
s = socket.socket()
s.connect(socket.getaddrinfo(host, port)[0][-1])
s.write(b"GET " + path.encode() + b" HTTP/1.0\r\nHost: x\r\n\r\n")
status = s.readline()
while s.readline() not in (b"\r\n", b""):
    pass
h = hashlib.md5()
left = size
while left > 0:
    got = s.readinto(buf) if left >= 4096 else s.readinto(buf, left)
    if not got:
        break
    h.update(buf if got == 4096 else buf[:got])
    left -= got
s.close()
if left or b" 200 " not in status:
    print("short or failed download:", status, left)
    sys.exit(1)
