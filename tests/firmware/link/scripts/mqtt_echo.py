# The smallest useful program around fota.mqtt.Link, to measure the heap the link
# needs: echo every message on t/in to t/out (QoS 1, then QoS 0) until "quit".
# argv: host port
#
# Its own state lives in main()'s locals: a new module global would grow the module's
# dict (a 272-byte block) the first time the loop stores it, which is exactly when a
# burst of messages fills this tight heap (the flaky runs of the heap test died so).
import gc
import sys
import time

from fota.mqtt import Link

inbox = []


def on_message(topic, msg):  # keep it short: the main loop does the work
    inbox.append(msg)


def main(link):
    link.subscribe(b"t/in")
    n = 0
    end = time.ticks_add(time.ticks_ms(), 15000)
    while time.ticks_diff(end, time.ticks_ms()) > 0:
        link.poll()
        while inbox:
            m = inbox.pop(0)
            if m == b"quit":
                end = time.ticks_ms()
                break
            n += link.publish(b"t/out", m, qos=1) + link.publish(b"t/out", m)
        time.sleep_ms(2)
    link.close()
    return n


n = main(Link("echo", sys.argv[1], int(sys.argv[2]), keepalive=5, timeout_ms=2000,
              on_message=on_message, on_connect=lambda: print("connected")))
gc.collect()
print("echoed", n, "in use", gc.mem_alloc())
