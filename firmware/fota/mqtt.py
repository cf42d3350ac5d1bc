# A resilient MQTT link on top of umqtt.simple (1.3.4 from the package index and
# micropython-lib's 1.8): deadlines on every socket read and write, a connect
# timeout, pings at keepalive/4 with a dead-link rule, QoS 1 with a PUBACK
# deadline and bounded DUP retries, and one idempotent link-down path that
# schedules a reconnect with capped, jittered exponential backoff.
#
# umqtt.simple keeps doing what it gets right (CONNECT, SUBSCRIBE, QoS 0 PUBLISH,
# PUBLISH decoding); its socket is replaced by _Sock, which applies our deadlines.
from micropython import const
from time import ticks_add, ticks_diff, ticks_ms

from umqtt import simple as _um

_IN = const(1)  # select.POLLIN
_OUT = const(4)  # select.POLLOUT
_ERR = const(24)  # select.POLLERR | select.POLLHUP
_ETIMEDOUT = const(110)
_EMSGSIZE = const(90)
_EOF = const(-1)  # what umqtt.simple raises on EOF too
_AI = ((None,),)  # getaddrinfo() answer for umqtt: it only takes [0][-1]


class _Sock:
    # Stands in for the socket umqtt.simple uses (and, during its connect(), for
    # its `socket` module). Why: umqtt's wait_msg() calls setblocking(True), which
    # on lwIP ports means no timeout at all, so a half-open link hangs the board
    # (facts page; micropython-lib umqtt.simple wait_msg). Here the real socket
    # stays non-blocking and every wait goes through poll() with a deadline: the
    # idle deadline (tmo) restarts on progress, `end` caps the whole operation.
    def __init__(self, s, tmo, mx):
        import select

        self.s = None
        self.tmo = tmo
        self.mx = mx
        self.nb = False  # True only between umqtt's check_msg() and its first read
        self.got = False  # some byte arrived since the caller cleared it
        self.rx = ticks_ms()
        self.end = ticks_add(self.rx, tmo)
        self.p = select.poll()
        self.use(s)

    def use(self, s):
        # (Re)bind to a stream: the TCP socket, then the TLS socket over it.
        if self.s is not None:
            self.p.unregister(self.s)
        self.s = s
        s.setblocking(False)
        self.p.register(s, _IN)

    # umqtt.simple's connect() calls socket.socket(), getaddrinfo(), connect()
    # and (1.8) settimeout(): the real connection is already open.
    def socket(self, *a):
        return self

    def getaddrinfo(self, *a):
        return _AI

    def connect(self, a):
        pass

    def settimeout(self, t):
        pass

    def setblocking(self, flag):
        self.nb = not flag

    def wait(self, ev, t):
        # Wait up to t ms (at most the idle deadline, never past `end`) for ev;
        # returns the poll flags, 0 on timeout.
        e = ticks_diff(self.end, ticks_ms())
        if t > e:
            t = e
        if t > 0:
            self.p.modify(self.s, ev)
            for _, r in self.p.ipoll(t):
                return r
        return 0

    def read(self, n):
        if n <= 0:
            if n:  # negative length from a malformed packet
                raise OSError(_EMSGSIZE)
            return b""  # a real socket would report EOF for read(0)
        if n > self.mx:  # a garbage length would otherwise be a MemoryError
            raise OSError(_EMSGSIZE)
        buf = None
        while True:
            b = self.s.read(n if buf is None else n - len(buf))
            if b is None:
                if self.nb and buf is None:
                    return None  # check_msg(): nothing pending
                if not self.wait(_IN, self.tmo):
                    raise OSError(_ETIMEDOUT)
                continue
            if not b:
                raise OSError(_EOF)
            self.rx = ticks_ms()
            self.got = True
            if buf is None:
                if len(b) == n:
                    return b
                buf = bytearray(b)
            else:
                buf += b
            if len(buf) == n:
                return bytes(buf)

    def write(self, b, n=None):
        # umqtt writes short pieces; a partial write is finished under the deadline.
        mv = None
        if n is not None and n < len(b):
            mv = memoryview(b)[:n]
        while True:
            k = self.s.write(mv or b)
            if k is None:
                k = 0
            if mv is None:
                if k >= len(b):
                    return
                mv = memoryview(b)
            if k >= len(mv):
                return
            mv = mv[k:]
            if not self.wait(_OUT, self.tmo):
                raise OSError(_ETIMEDOUT)

    def close(self):
        try:
            self.p.unregister(self.s)
        except Exception:
            pass
        self.s.close()


class Link:
    def __init__(self, client_id, host, port=1883, user=None, password=None, keepalive=60,
                 tls=None, server_hostname=None, timeout_ms=10000, on_message=None,
                 on_connect=None, backoff_min_ms=500, backoff_max_ms=30000,
                 retries=2, max_packet=4096):
        self._host = host
        self._port = port
        self._tls = tls
        self._sni = server_hostname or host
        self._tmo = timeout_ms
        self.on_message = on_message
        self.on_connect = on_connect
        self._bmin = backoff_min_ms
        self._bmax = backoff_max_ms
        self._retries = retries
        self._mx = max_packet
        self._pi = keepalive * 250  # ping interval: keepalive/4, in ms (0: no pings)
        self._subs = []
        self._sk = None
        self._want = True  # poll() (re)connects until close()
        self._next = ticks_ms()
        self._fails = 0
        self._pt = 0
        self._ack = 0  # packet id of the QoS 1 publish waiting for its PUBACK
        self._b = bytearray(5)
        c = self._c = _um.MQTTClient(client_id, host, port, user, password, keepalive)
        c.set_callback(self._cb)

    @property
    def connected(self):
        return self._sk is not None

    def _cb(self, topic, msg, *_):  # *_: later umqtt versions may pass a retain flag
        f = self.on_message
        if f:
            try:
                f(topic, msg)
            except Exception as e:  # an agent bug must not cost the link
                import sys

                sys.print_exception(e)

    def _down(self):
        # The one link-down path: close, forget, schedule the reconnect. Idempotent.
        sk = self._sk
        self._sk = None
        self._c.sock = None
        self._ack = 0
        if sk:
            try:
                sk.close()
            except Exception:
                pass
            self._sched()

    def _sched(self):
        from random import getrandbits

        d = self._bmin << min(self._fails, 16)
        if d > self._bmax:
            d = self._bmax
        self._fails += 1
        # Jitter in (d/2, d]: devices that lost the same broker do not return in step.
        d -= (d >> 1) * getrandbits(8) >> 8
        self._next = ticks_add(ticks_ms(), d)

    def subscribe(self, topic, qos=1):
        if len(topic) > 120:  # umqtt 1.3.4 packs the SUBSCRIBE length in one byte
            raise ValueError("topic")
        qos = 1 if qos else 0  # umqtt.simple cannot receive QoS 2 (assert 0)
        for i, (t, _) in enumerate(self._subs):
            if t == topic:
                del self._subs[i]
                break
        self._subs.append((topic, qos))
        sk = self._sk
        if sk:
            try:
                sk.end = ticks_add(ticks_ms(), self._tmo)
                self._c.subscribe(topic, qos)
            except Exception:
                self._down()  # the reconnect subscribes it again

    def connect(self):
        import socket
        import errno

        self._want = True
        self._down()
        c = self._c
        s = sk = None
        old = _um.socket
        try:
            # DNS again on every attempt: the broker may have moved. (getaddrinfo
            # itself cannot be given a timeout on MicroPython.)
            ai = socket.getaddrinfo(self._host, self._port, 0, socket.SOCK_STREAM)[0]
            s = socket.socket(ai[0], socket.SOCK_STREAM)
            sk = _Sock(s, self._tmo, self._mx)  # its `end` bounds the whole connect
            try:  # umqtt.simple 1.3.4 has no connect timeout: connect non-blocking
                s.connect(ai[-1])
            except OSError as e:
                if e.errno not in (errno.EINPROGRESS, errno.EAGAIN):
                    raise
            r = sk.wait(_OUT, self._tmo)
            if not r or r & _ERR:  # blackhole, or refused
                raise OSError(_ETIMEDOUT)
            if self._tls:
                # Handshake in blocking mode bounded by the socket timeout, then
                # back to non-blocking. umqtt 1.3.4 only knows ussl.wrap_socket, so
                # the context is applied here and umqtt is told ssl=False.
                s.setblocking(True)
                s.settimeout(self._tmo / 1000)
                sk.use(self._tls.wrap_socket(s, server_hostname=self._sni))
            c.sock = None  # 1.8 closes a previous socket in connect()
            c.ssl = False
            c.pid = 0  # 1.3.4 never wraps pid past 65535; a new session starts at 0
            _um.socket = sk  # umqtt's connect() takes "socket.socket()" = our socket
            try:
                c.connect()  # clean session
            finally:
                _um.socket = old
            for t, q in self._subs:
                c.subscribe(t, q)
        except Exception:
            # OSError, MQTTException (CONNACK refused), AssertionError/IndexError
            # on garbage in umqtt's checks: all mean "no link".
            _um.socket = old
            c.sock = None
            try:
                sk.close() if sk else s.close()
            except Exception:
                pass
            self._sched()
            return False
        self._sk = sk
        self._fails = 0
        self._pt = ticks_ms()
        if self.on_connect:
            self.on_connect()
        return True

    def _one(self):
        # Read and handle one packet if one is pending; True if anything arrived.
        sk = self._sk
        sk.got = False
        op = self._c.check_msg()
        if not sk.got:
            return False
        if op is not None and op & 0xF0 != 0x30:
            # umqtt returns other packet types with their body unread: consume it
            # here, or the stream desynchronises (e.g. a late PUBACK or SUBACK).
            n = self._c._recv_len()
            b = sk.read(n)
            if op == 0x40 and n == 2 and self._ack == b[0] << 8 | b[1]:
                self._ack = 0
        return True

    def poll(self):
        now = ticks_ms()
        sk = self._sk
        if sk is None:
            if self._want and ticks_diff(now, self._next) >= 0:
                self.connect()
            return
        try:
            pi = self._pi
            if pi:
                # Half-open links are only detectable by silence: a PINGRESP is
                # due every ping interval, so 2.5 intervals of nothing = dead.
                if ticks_diff(now, sk.rx) > pi * 5 // 2:
                    raise OSError(_ETIMEDOUT)
                if ticks_diff(now, self._pt) >= pi:  # umqtt never pings by itself
                    self._pt = now
                    sk.end = ticks_add(now, self._tmo)
                    sk.write(b"\xc0\0")
            sk.end = ticks_add(now, self._tmo)
            while self._one() and ticks_diff(sk.end, ticks_ms()) > 0:
                pass
        except Exception:
            self._down()

    def _send1(self, topic, msg, retain, pid, dup):
        # QoS 1 PUBLISH written here: umqtt's publish(qos=1) waits for PUBACK
        # forever and cannot set DUP on a retransmission.
        b = self._b
        w = self._sk.write
        sz = 4 + len(topic) + len(msg)
        b[0] = 0x32 | dup << 3 | retain
        i = 1
        while sz > 0x7F:
            b[i] = sz & 0x7F | 0x80
            sz >>= 7
            i += 1
        b[i] = sz
        w(b, i + 1)
        n = len(topic)
        b[0] = n >> 8
        b[1] = n & 0xFF
        w(b, 2)
        w(topic)
        b[0] = pid >> 8
        b[1] = pid & 0xFF
        w(b, 2)
        w(msg)

    def publish(self, topic, msg, qos=0, retain=False):
        sk = self._sk
        if sk is None:
            return False
        try:
            sk.end = ticks_add(ticks_ms(), self._tmo)
            if not qos:
                self._c.publish(topic, msg, retain)
                return True
            c = self._c
            c.pid = pid = c.pid % 65535 + 1
            n = self._retries + 1
            t = self._tmo // n  # all attempts together wait about timeout_ms
            for i in range(n):
                sk.end = ticks_add(ticks_ms(), self._tmo)
                self._send1(topic, msg, retain, pid, i > 0)
                self._ack = pid
                end = ticks_add(ticks_ms(), t)
                while self._ack and ticks_diff(end, ticks_ms()) > 0:
                    if not self._one() and not sk.wait(_IN, ticks_diff(end, ticks_ms())):
                        break
                if not self._ack:
                    return True
            # No PUBACK after every retry: the link is not working.
            raise OSError(_ETIMEDOUT)
        except Exception:
            self._down()
            return False

    def close(self):
        self._want = False
        sk = self._sk
        if sk:
            try:
                sk.end = ticks_add(ticks_ms(), self._tmo)
                sk.write(b"\xe0\0")
            except Exception:
                pass
        self._down()
