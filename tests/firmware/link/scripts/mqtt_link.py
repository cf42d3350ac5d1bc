# Device side of tests/firmware/link/test_mqtt_link.py: runs fota.mqtt.Link on the unix
# port and prints one JSON object per line (events, with device-clock times in ms).
# argv: mode host port [key=value ...]; modes: loop, connect, pub1, idle, slow.
import gc
import json
import sys
import time

from fota.mqtt import Link

T0 = time.ticks_ms()


def now():
    return time.ticks_diff(time.ticks_ms(), T0)


def out(**kw):
    kw["t"] = now()
    print(json.dumps(kw))


mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
opt = {"ka": "60", "tmo": "2000", "bmin": "100", "bmax": "800", "run": "20",
       "sub": "t/in", "retries": "2", "id": "dev1"}
for a in sys.argv[4:]:
    k, v = a.split("=", 1)
    opt[k] = v
ncon = 0


def on_connect():
    global ncon
    ncon += 1
    out(ev="connected", n=ncon)


def on_message(topic, msg):
    out(ev="msg", topic=topic.decode(), msg=msg.decode("utf-8", "replace"))
    if topic.endswith(b"/cmd"):
        # "pub QOS TOPIC PAYLOAD": publish from the main loop's point of view
        pending.append(msg.decode().split(" ", 3))


pending = []
ticks = [0]


def tick():  # what a board's watchdog feed would be
    ticks[0] += 1


ctx = None
if "tlsnone" in opt:  # TLS without verification (handshake tests)
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_NONE
if "ca" in opt:  # TLS verified against this CA (DER), as a board would be configured
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    with open(opt["ca"], "rb") as f:
        ctx.load_verify_locations(cadata=f.read())
link = Link(opt["id"], host, port, keepalive=int(opt["ka"]), timeout_ms=int(opt["tmo"]),
            tls=ctx, server_hostname=opt.get("sni"),
            on_message=on_message, on_connect=on_connect, backoff_min_ms=int(opt["bmin"]),
            backoff_max_ms=int(opt["bmax"]), retries=int(opt["retries"]), tick=tick)
_connect = link.connect


def sched():  # the reconnect delay the link has just chosen
    out(ev="sched", d=time.ticks_diff(link._next_try, time.ticks_ms()))


def traced_connect():
    out(ev="try")
    ok = _connect()
    if not ok:
        sched()
    return ok


if mode == "connect":  # one attempt, timed
    t = now()
    ok = link.connect()
    out(ev="connect", ok=ok, ms=now() - t, ticks=ticks[0])
    sys.exit(0)

if opt["sub"]:
    link.subscribe(opt["sub"], 1)
    link.subscribe(opt["sub"].rsplit("/", 1)[0] + "/cmd", 0)

if mode == "pub1":  # connect, then one QoS 1 publish, timed
    ok = link.connect()
    t = now()
    r = link.publish(b"t/out", b"x" * 10, qos=1)
    out(ev="pub", qos=1, ok=r, ms=now() - t, connected=link.connected)
    sys.exit(0)

if mode == "idle":  # a connected link with nothing to do: polling allocates nothing
    import micropython

    def idle(n):
        micropython.heap_lock()
        try:
            while n:
                n -= 1
                link.poll()  # a MemoryError in here would take the link down
                time.sleep_ms(2)
        finally:
            micropython.heap_unlock()

    ok = link.connect()
    t = now()
    idle(500)
    out(ev="idle", ok=ok, connected=link.connected, ms=now() - t)
    sys.exit(0)

if mode == "slow":  # a main loop that polls only every `gap` ms (a long step elsewhere)
    ok = link.connect()
    for _ in range(int(opt.get("n", "4"))):
        time.sleep_ms(int(opt["gap"]))
        link.poll()
    out(ev="slow", ok=ok, connected=link.connected, connects=ncon)
    link.close()
    sys.exit(0)

link.connect = traced_connect
end = time.ticks_add(time.ticks_ms(), int(float(opt["run"]) * 1000))
up = False
gc.collect()
base = gc.mem_alloc()
peak = 0
while time.ticks_diff(end, time.ticks_ms()) > 0:
    link.poll()
    if link.connected != up:
        up = link.connected
        if not up:
            out(ev="down")
            sched()
    while pending:
        c = pending.pop(0)
        if c[0] == "quit":
            end = time.ticks_ms()
            break
        t = now()
        r = link.publish(c[2].encode(), c[3].encode(), qos=int(c[1]))
        out(ev="pub", qos=int(c[1]), ok=r, ms=now() - t)
    a = gc.mem_alloc()
    if a > peak:
        peak = a
    time.sleep_ms(5)
link.close()
out(ev="end", connects=ncon, connected=link.connected, base=base, peak=peak)
