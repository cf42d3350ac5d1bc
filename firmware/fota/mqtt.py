# A resilient MQTT link over umqtt.simple (1.3.4 from the package index, or
# micropython-lib's 1.8): deadlines on every socket read and write, connect timeout,
# pings at keepalive/4 and a dead-link rule, QoS 1 with a PUBACK deadline and DUP
# retries, one link-down path, reconnects with capped jittered backoff. umqtt keeps
# encoding CONNECT, SUBSCRIBE, QoS 0 PUBLISH and decoding PUBLISH, through _Sock.
from micropython import const
from time import ticks_add, ticks_diff, ticks_ms

from umqtt import simple as _um

_IN = const(1)  # select.POLLIN
_OUT = const(4)  # select.POLLOUT
_ERR = const(24)  # select.POLLERR | select.POLLHUP
_ETIMEDOUT = const(110)
_AI = ((None,),)  # a getaddrinfo() answer: umqtt only takes [0][-1]


def _call(f, *a):  # run an application callback; its bugs must not cost the link
    if f:
        try:
            f(*a)
        except Exception as e:
            import sys

            sys.print_exception(e)


class _Sock:
    # The socket umqtt.simple uses and, during its connect(), its `socket` module.
    # Why: umqtt's wait_msg() calls setblocking(True), which on lwIP ports means no
    # timeout at all, so a half-open link hangs the board (facts page; wait_msg in
    # both 1.3.4 and 1.8). Here the real socket stays non-blocking and every wait
    # is a poll() bounded by `tmo` (restarts on progress) and by `end` (the
    # caller's deadline for the whole operation).
    def __init__(self, s, tmo, mx):
        import select

        self.s, self.tmo, self.mx = s, tmo, mx
        self.nb = False  # True from umqtt's check_msg() to its first read
        self.got = False  # a byte arrived since the caller cleared this
        self.rx = ticks_ms()  # when the last byte arrived
        self.end = ticks_add(self.rx, tmo)
        self.one = bytearray(1)
        self.p = select.poll()
        self.p.register(s, _IN)
        s.setblocking(False)

    # umqtt's connect() calls socket.socket(), socket.getaddrinfo(), sock.connect()
    # and (1.8) sock.settimeout(): by then the connection is already open.
    def socket(self, *a):
        return self

    def getaddrinfo(self, *a):
        return _AI

    def connect(self, *a):
        pass

    settimeout = close = connect  # Link closes self.s itself

    def setblocking(self, flag):
        self.nb = not flag

    def wait(self, ev, t):  # -> poll flags, 0 after t ms (or at `end`)
        e = ticks_diff(self.end, ticks_ms())
        if t > e:
            t = e
        if t > 0:
            self.p.modify(self.s, ev)
            for _, r in self.p.ipoll(t):
                return r
        return 0

    def read(self, n):
        if not 0 < n <= self.mx:
            if n > 0:
                # Bigger than we take: skip it (the callback sees an empty message)
                # instead of dying in MemoryError or dropping the whole link.
                self.skip(n)
            return b""  # the real read(0) would look like EOF to umqtt
        if self.nb:  # check_msg()'s 1-byte probe on every poll: readinto allocates nothing
            b = self.s.readinto(self.one)
            if b is None:
                return None
            if not b:
                raise OSError(-1)
            self.rx, self.got = ticks_ms(), True
            return self.one  # umqtt only takes res[0] and compares res with bytes
        buf = b""
        while len(buf) < n:
            b = self.s.read(n - len(buf))
            if b is None:
                if not self.wait(_IN, self.tmo):
                    raise OSError(_ETIMEDOUT)
            elif b:
                buf = buf + b if buf else b
                self.rx, self.got = ticks_ms(), True
            else:
                raise OSError(-1)  # EOF, as umqtt reports it
        return buf

    def skip(self, n):
        scratch = bytearray(128)
        while n > 0:
            b = self.s.readinto(scratch, min(n, 128))
            if b is None:
                if not self.wait(_IN, self.tmo):
                    raise OSError(_ETIMEDOUT)
            elif b:
                n -= b
                self.rx, self.got = ticks_ms(), True
            else:
                raise OSError(-1)

    def write(self, b, n=None):
        mv = memoryview(b)
        if n is not None:
            mv = mv[:n]
        while mv:
            k = self.s.write(mv)
            if k:
                mv = mv[k:]
            elif not self.wait(_OUT, self.tmo):
                raise OSError(_ETIMEDOUT)


class Link:
    # Use: subscribe() the topics, then call poll() often (every 10-100 ms) from
    # the main loop; it connects, reconnects, pings and dispatches. An idle poll()
    # allocates nothing; it may block up to timeout_ms (a reconnect attempt, or a
    # peer sending slowly). on_message(topic, msg) runs inside poll() or inside a
    # QoS 1 publish(): keep it short, record the work and do it in the main loop.
    # publish() returns False (never raises) when the link is down; a QoS 1
    # publish waits about timeout_ms at most for its PUBACK (retries with DUP),
    # then takes the link down. Clean sessions: re-publish what matters after
    # on_connect; QoS 1 can deliver duplicates.
    def __init__(self, client_id, host, port=1883, user=None, password=None, keepalive=60,
                 tls=None, server_hostname=None, timeout_ms=10000, on_message=None,
                 on_connect=None, backoff_min_ms=500, backoff_max_ms=30000,
                 retries=2, max_packet=4096):
        self._host, self._port, self._tmo = host, port, timeout_ms
        self._tls, self._sni = tls, server_hostname or host
        self.on_message, self.on_connect = on_message, on_connect
        self._bmin, self._bmax = backoff_min_ms, backoff_max_ms
        self._retries, self._mx = retries, max_packet
        self._pi = keepalive * 250  # ping interval (keepalive/4) in ms; 0: no pings
        self._subs = {}  # topic: qos, subscribed again on every connect
        self._sk = None
        self._want = True  # poll() (re)connects until close()
        self._next, self._fails = ticks_ms(), 0
        self._pt = 0  # when the last PINGREQ went out
        self._ack = 0  # packet id of the QoS 1 PUBLISH waiting for its PUBACK
        self._b = bytearray(4)
        c = self._c = _um.MQTTClient(client_id, host, port, user, password, keepalive)
        c.set_callback(self._cb)

    @property
    def connected(self):
        return self._sk is not None

    def _cb(self, topic, msg, *_):  # *_: a umqtt that also passes the retain flag
        _call(self.on_message, topic, msg)

    def _down(self):
        # The one link-down path: close, forget, schedule the next connect.
        from random import getrandbits

        sk = self._sk
        self._sk = self._c.sock = None
        self._ack = 0
        if sk:
            try:
                sk.s.close()
            except Exception:
                pass
        d = min(self._bmax, self._bmin << min(self._fails, 16))
        self._fails += 1
        # Jitter into (d/2, d]: devices that lost the same broker come back apart.
        self._next = ticks_add(ticks_ms(), d - ((d >> 1) * getrandbits(8) >> 8))

    def subscribe(self, topic, qos=1):
        if len(topic) > 120:  # umqtt 1.3.4 packs the SUBSCRIBE length in one byte
            raise ValueError("topic")
        qos = self._subs[topic] = 1 if qos else 0  # umqtt can't take QoS 2 (assert 0)
        if self._sk:
            self._sk.end = ticks_add(ticks_ms(), self._tmo)
            try:
                self._c.subscribe(topic, qos)
            except Exception:
                self._down()  # the reconnect subscribes it

    def connect(self):
        import errno
        import socket

        self._want = True
        if self._sk:
            self._down()
        c = self._c
        s = sk = None
        old = _um.socket  # type: ignore  # the esp32 stub omits umqtt.simple's `socket` import
        try:
            # DNS on every attempt: the broker may have moved. (getaddrinfo itself
            # takes no timeout on MicroPython.)
            ai = socket.getaddrinfo(self._host, self._port, 0, socket.SOCK_STREAM)[0]
            s = socket.socket(ai[0], socket.SOCK_STREAM)
            sk = _Sock(s, self._tmo, self._mx)  # its `end` bounds the whole connect
            try:  # umqtt writes each packet in pieces: with Nagle and the broker's
                # delayed ACK every request/response costs 40-200 ms
                s.setsockopt(6, 1, 1)  # IPPROTO_TCP, TCP_NODELAY (Linux and lwIP)
            except Exception:
                pass
            try:  # umqtt 1.3.4 has no connect timeout: connect without blocking
                s.connect(ai[-1])
            except OSError as e:
                if e.errno not in (errno.EINPROGRESS, errno.EAGAIN):
                    raise
            r = sk.wait(_OUT, self._tmo)
            if not r or r & _ERR:  # a blackhole, or refused
                raise OSError(_ETIMEDOUT)
            if self._tls:
                # 1.3.4 only knows ussl.wrap_socket(): the SSLContext is applied here
                # and umqtt gets ssl=False. The handshake blocks, bounded by the
                # socket timeout.
                s.setblocking(True)
                s.settimeout(self._tmo / 1000)
                s = self._tls.wrap_socket(s, server_hostname=self._sni)
                sk.__init__(s, self._tmo, self._mx)
            c.sock = None  # 1.8 closes the previous socket in connect()
            c.ssl = False
            c.pid = 0  # 1.3.4 never wraps pid at 65535; a clean session restarts it
            _um.socket = sk  # type: ignore  # (stub) so umqtt's "socket.socket()" is ours
            c.connect()  # clean session
            _um.socket = old  # type: ignore  # (stub, see above)
            for t in self._subs:
                c.subscribe(t, self._subs[t])
        except Exception:
            # OSError, MQTTException (CONNACK refused), AssertionError/IndexError
            # from umqtt's checks on garbage: all mean "no link".
            _um.socket = old  # type: ignore  # (stub, see above)
            if s and not sk:
                s.close()
            self._sk = sk
            self._down()
            return False
        self._sk, self._fails, self._pt = sk, 0, ticks_ms()
        _call(self.on_connect)
        return True

    def _one(self):  # handle one pending packet; False if none was there
        sk = self._sk
        sk.got = False
        op = self._c.check_msg()
        if not sk.got:
            return False
        if op is not None and op & 0xF0 != 0x30:
            # umqtt returns other packets with their body unread: consume it here,
            # or a late PUBACK or SUBACK desynchronises the stream.
            n = self._c._recv_len()
            b = sk.read(n)
            if op == 0x40 and n == 2 and self._ack == b[0] << 8 | b[1]:
                self._ack = 0
        return True

    def poll(self):
        now = ticks_ms()
        sk = self._sk
        if not sk:
            if self._want and ticks_diff(now, self._next) >= 0:
                self.connect()
            return
        try:
            sk.end = ticks_add(now, self._tmo)
            pi = self._pi
            if pi:
                # Half-open links only show as silence: a PINGRESP is due every
                # interval, so 2.5 intervals without a byte means the link is dead.
                if ticks_diff(now, sk.rx) > pi * 5 // 2:
                    raise OSError(_ETIMEDOUT)
                if ticks_diff(now, self._pt) >= pi:  # umqtt never pings by itself
                    self._pt = now
                    sk.write(b"\xc0\0")
            # self._sk: on_message may have closed the link
            while self._sk and self._one() and ticks_diff(sk.end, ticks_ms()) > 0:
                pass
        except Exception:
            self._down()

    def publish(self, topic, msg, qos=0, retain=False):
        sk = self._sk
        if not sk:
            return False
        c, b = self._c, self._b
        try:
            sk.end = ticks_add(ticks_ms(), self._tmo)
            if not qos:
                c.publish(topic, msg, retain)
                return True
            # QoS 1 is written here: umqtt's publish(qos=1) waits for PUBACK
            # forever and cannot set DUP on a retransmission.
            c.pid = pid = c.pid % 65535 + 1
            n = self._retries + 1
            for i in range(n):
                sz, j = 4 + len(topic) + len(msg), 1
                b[0] = 0x32 | (i > 0) << 3 | retain
                while sz > 0x7F:
                    b[j] = sz & 0x7F | 0x80
                    sz >>= 7
                    j += 1
                b[j] = sz
                sk.end = ticks_add(ticks_ms(), self._tmo)
                sk.write(b, j + 1)
                c._send_str(topic)
                b[0], b[1] = pid >> 8, pid & 0xFF
                sk.write(b, 2)
                sk.write(msg)
                self._ack = pid
                # all attempts together wait about timeout_ms for the PUBACK
                end = ticks_add(ticks_ms(), self._tmo // n)
                while self._ack and ticks_diff(end, ticks_ms()) > 0:
                    if not self._one():
                        sk.wait(_IN, ticks_diff(end, ticks_ms()))
                if not self._ack:
                    return True
            raise OSError(_ETIMEDOUT)  # no PUBACK after every retry: a dead link
        except Exception:
            self._down()
            return False

    def close(self):
        self._want = False
        if self._sk:
            try:
                self._sk.end = ticks_add(ticks_ms(), self._tmo)
                self._sk.write(b"\xe0\0")
            except Exception:
                pass
        self._down()
