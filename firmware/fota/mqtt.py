"""A resilient MQTT link: connectivity only (the packets are fota/mqttcodec.py's job).

Deadlines on every socket read and write, a connect timeout, pings at keepalive/4
and a dead-link rule, QoS 1 with a PUBACK deadline and DUP retries, one link-down
path, reconnects with capped jittered backoff.

umqtt.simple (1.3.4 from the package index, or micropython-lib's 1.8) stays
underneath, reached through one seam: its MQTTClient talks to the broker only
through its `sock` attribute (`read(n)`, `write(buf[, n])`, `setblocking(flag)`).
The link opens the connection and sends CONNECT, SUBSCRIBE and PUBLISH itself
(mqttcodec: umqtt's connect() would open a socket of its own, without a timeout),
then sets `client.sock` to its deadline stream and calls only umqtt's public
`check_msg()` and `ping()`: umqtt decodes PUBLISH (answering QoS 1 with PUBACK) and
PINGRESP, and hands back any other packet's first byte with its body unread, which
mqttcodec.read_ack() consumes.
"""
from micropython import const
from time import ticks_add, ticks_diff, ticks_ms

from umqtt.simple import MQTTClient

from fota import mqttcodec as codec

_POLLIN = const(1)  # select.POLLIN
_POLLOUT = const(4)  # select.POLLOUT
_POLLERR_HUP = const(24)  # select.POLLERR | select.POLLHUP
_ETIMEDOUT = const(110)
_ECONNREFUSED = const(111)
_SKIP_CHUNK = const(128)
_SLICE_MS = const(1000)  # longest wait between two tick() calls (the watchdog's feed)


def _bytes(s):
    """MQTT lengths count bytes: a str goes out UTF-8 encoded (micropython-lib #746)."""
    return s.encode() if isinstance(s, str) else s


class _Stream:
    """The socket as umqtt and the codec see it, with deadlines.

    Why: umqtt's wait_msg() calls setblocking(True), which on lwIP ports means no
    timeout at all, so a half-open link would hang the board (facts page; wait_msg in
    both 1.3.4 and 1.8). Here the real socket stays non-blocking and every wait is a
    poll() bounded by `timeout_ms` (restarting on progress) and by `deadline` (the
    link's deadline for the whole operation).
    """

    def __init__(self, sock, timeout_ms, max_packet):
        import select

        self.timeout_ms = timeout_ms
        self.max_packet = max_packet
        self.probing = False  # True from umqtt's check_msg() to its first read
        self.tick = None  # called about once a second of waiting (feeds a watchdog)
        self.progress = False  # a byte arrived since the link cleared this
        self._one = bytearray(1)
        self._poller = select.poll()
        self.sock = None
        self.attach(sock)

    def attach(self, sock):
        """Use `sock` (the TCP socket, then the TLS one wrapping it); restarts the deadline."""
        if self.sock is not None:
            self._poller.unregister(self.sock)
        self.sock = sock
        self.last_rx = ticks_ms()  # when the last byte arrived
        self.deadline = ticks_add(self.last_rx, self.timeout_ms)
        self._poller.register(sock, _POLLIN)
        sock.setblocking(False)

    def setblocking(self, flag):
        self.probing = not flag

    def wait(self, events, ms):
        """Poll flags once `events` are ready; 0 after `ms` (or at the deadline).
        Waits a second at most between two tick() calls."""
        end = ticks_add(ticks_ms(), ms)
        self._poller.modify(self.sock, events)
        while True:
            now = ticks_ms()
            left = ticks_diff(end, now)
            rest = ticks_diff(self.deadline, now)
            if rest < left:
                left = rest
            if left <= 0:
                return 0
            for _, flags in self._poller.ipoll(left if left < _SLICE_MS else _SLICE_MS):
                return flags
            if self.tick:
                self.tick()

    def read(self, n):
        if not 0 < n <= self.max_packet:
            if n > 0:
                # Bigger than we take: skip it (the callback sees an empty message)
                # instead of dying in MemoryError or dropping the whole link.
                self.skip(n)
            return b""  # the real read(0) would look like EOF to umqtt
        if self.probing:
            # check_msg()'s 1-byte probe on every poll: readinto allocates nothing.
            got = self.sock.readinto(self._one)
            if got is None:
                return None
            if not got:
                raise OSError(-1)  # EOF, as umqtt reports it
            self.last_rx, self.progress = ticks_ms(), True
            return self._one  # umqtt only takes res[0] and compares res with bytes
        buf = b""
        while len(buf) < n:
            chunk = self.sock.read(n - len(buf))
            if chunk is None:
                if not self.wait(_POLLIN, self.timeout_ms):
                    raise OSError(_ETIMEDOUT)
            elif chunk:
                buf = buf + chunk if buf else chunk
                self.last_rx, self.progress = ticks_ms(), True
            else:
                raise OSError(-1)
        return buf

    def skip(self, n):
        scratch = bytearray(_SKIP_CHUNK)
        while n > 0:
            got = self.sock.readinto(scratch, min(n, _SKIP_CHUNK))
            if got is None:
                if not self.wait(_POLLIN, self.timeout_ms):
                    raise OSError(_ETIMEDOUT)
            elif got:
                n -= got
                self.last_rx, self.progress = ticks_ms(), True
            else:
                raise OSError(-1)

    def write(self, buf, n=None):
        if n is None:
            n = len(buf)
        done = 0
        while done < n:
            sent = self.sock.write(buf, done, n - done)  # (buf, offset, length): no slice
            if sent:
                done += sent
            elif not self.wait(_POLLOUT, self.timeout_ms):
                raise OSError(_ETIMEDOUT)


def _cause(exc):
    """An exception (or words) as a short cause for the log."""
    a = getattr(exc, "args", None) if isinstance(exc, OSError) else None
    if a:
        if len(a) > 1:
            return a[1]
        return ("closed by the broker" if a[0] == -1 else "connection refused"
                if a[0] == _ECONNREFUSED else "OSError %s" % a[0])
    return exc if isinstance(exc, str) else str(exc) or type(exc).__name__


def _context(spec):
    """The TLS context for one connection, from (CA file, insecure): with a spec instead
    of a context (broker.tls_during_download "close"), nothing of TLS stays in RAM once
    the link is closed (the socket holds its context while connected). fota.tls leaves
    again unless the HTTP client is using it."""
    import sys

    from fota.tls import context, read_ca

    try:
        return context(read_ca(spec[0]), spec[1])
    finally:
        if "fota.http" not in sys.modules:
            sys.modules.pop("fota.tls", None)
            try:
                delattr(sys.modules["fota"], "tls")
            except (AttributeError, KeyError):
                pass


class Link:
    """Use: subscribe() the topics, then call poll() often (every 10-100 ms) from the
    main loop; it connects, reconnects, pings and dispatches. An idle poll()
    allocates nothing; it may block up to timeout_ms (a reconnect attempt, or a peer
    sending slowly). on_message(topic, msg) runs inside poll() or inside a QoS 1
    publish(): keep it short, record the work and do it in the main loop.
    publish() returns False (never raises) when the link is down; a QoS 1 publish
    waits about timeout_ms at most for its PUBACK (retries with DUP), then takes the
    link down. Clean sessions: re-publish what matters after on_connect; QoS 1 can
    deliver duplicates. `tls`: an SSLContext, or (CA file, insecure) for a context made
    at each connection and dropped with it.
    """

    def __init__(self, client_id, host, port=1883, user=None, password=None, keepalive=60,
                 tls=None, server_hostname=None, timeout_ms=10000, on_message=None,
                 on_connect=None, backoff_min_ms=500, backoff_max_ms=30000,
                 retries=2, max_packet=4096, tick=None):
        # CONNECT's fields, as bytes
        self._login = (_bytes(client_id), None if user is None else _bytes(user),
                       None if password is None else _bytes(password), keepalive)
        self._host, self._port = host, port
        self._tls, self._server_hostname = tls, server_hostname or host
        self._timeout_ms = timeout_ms
        self.on_message, self.on_connect = on_message, on_connect
        self._backoff_ms = (backoff_min_ms, backoff_max_ms)
        self._retries, self._max_packet = retries, max_packet
        self.tick = tick  # called about once a second while a wait blocks (watchdog)
        self._said = None  # the connect failure last logged (said once, not per retry)
        self._ping_every_ms = keepalive * 250  # keepalive/4; 0: no pings
        self._ping_out = False  # a PINGREQ waits for its answer (any byte counts)
        self._subscriptions = {}  # topic: qos, subscribed again on every connect
        self._stream = None  # the connection's _Stream; None while down
        self._wanted = True  # poll() (re)connects until close()
        self._next_try, self._failures = ticks_ms(), 0
        self._pinged_at = 0  # when the last PINGREQ went out
        self._pid = 0  # the last packet id used (1..65535)
        self._awaiting = 0  # packet id whose PUBACK or SUBACK is awaited
        self._head = bytearray(5)  # the codec's scratch: fixed headers, lengths, ids
        self._client = MQTTClient(client_id, host)
        self._client.set_callback(self._deliver)

    @property
    def connected(self):
        return self._stream is not None

    def _deliver(self, topic, msg=None, *_):  # *_: a umqtt that also passes the retain flag
        """Run an application callback (on_message, or on_connect when `topic` is None);
        its bugs must not cost the link."""
        try:
            if topic is None:
                if self.on_connect:
                    self.on_connect()
            elif self.on_message:
                self.on_message(topic, msg)
        except Exception as exc:  # noqa: BLE001 - printed; the link goes on
            import sys

            sys.print_exception(exc)

    def _say(self, *what):
        # One line per state change: connected, refused (the broker's reason), lost
        # (why), connected again.
        print("fota: mqtt", *what)

    def _where(self):
        return "%s:%d" % (self._host, self._port)

    def _down(self, why=None):
        """The one link-down path: close, forget, schedule the next connect. `why`:
        the cause, for the log line (an exception or words; None: said elsewhere)."""
        from random import getrandbits

        stream = self._stream
        if stream and why is not None:
            self._say("connection to", self._where(), "lost:", _cause(why))
        self._stream = self._client.sock = None
        self._awaiting = 0
        if stream:
            try:
                stream.sock.close()
            except Exception:  # noqa: BLE001 - the socket is being dropped anyway
                pass
        low, high = self._backoff_ms
        delay = min(high, low << min(self._failures, 16))
        self._failures += 1
        # Jitter into (d/2, d]: devices that lost the same broker come back apart.
        delay -= (delay >> 1) * getrandbits(8) >> 8
        self._next_try = ticks_add(ticks_ms(), delay)

    def _packet(self):
        """Handle one packet if one has begun to arrive; False when none had."""
        stream = self._stream
        stream.progress = False
        op = self._client.check_msg()
        if not stream.progress:
            return False
        if op is not None and op & 0xF0 != 0x30:
            # Not a PUBLISH: read its body here, or a late PUBACK or SUBACK would
            # desynchronise the stream.
            pid = codec.read_ack(stream, op)
            if pid and pid == self._awaiting:
                self._awaiting = 0
        return True

    def _await(self, pid, ms):
        """Handle packets until `pid` is acknowledged or `ms` pass; True when it was."""
        self._awaiting = pid
        end = ticks_add(ticks_ms(), ms)
        while self._awaiting and ticks_diff(end, ticks_ms()) > 0:
            if not self._packet():
                self._stream.wait(_POLLIN, ticks_diff(end, ticks_ms()))
        return not self._awaiting

    def _subscribe(self, topic, qos):
        pid = self._pid = self._pid % 65535 + 1
        codec.write_subscribe(self._stream, self._head, pid, topic, qos)
        if not self._await(pid, self._timeout_ms):
            raise OSError(_ETIMEDOUT)

    def subscribe(self, topic, qos=1):
        """Subscribe now if connected, and again on every connect (QoS 0 or 1)."""
        topic = _bytes(topic)
        qos = self._subscriptions[topic] = 1 if qos else 0
        if self._stream:
            self._stream.deadline = ticks_add(ticks_ms(), self._timeout_ms)
            try:
                self._subscribe(topic, qos)
            except Exception as exc:  # noqa: BLE001 - any failure means no link; it reconnects
                self._down(exc)  # the reconnect subscribes it

    def connect(self):
        """One connection attempt now (poll() makes them when needed); True when up."""
        import errno
        import socket

        self._wanted = True
        if self._stream:
            self._down()
        sock = stream = None
        try:
            # DNS on every attempt: the broker may have moved. (getaddrinfo itself
            # takes no timeout on MicroPython.)
            ai = socket.getaddrinfo(self._host, self._port, 0, socket.SOCK_STREAM)[0]
            sock = socket.socket(ai[0], socket.SOCK_STREAM)
            # Its deadline bounds the whole connect.
            stream = _Stream(sock, self._timeout_ms, self._max_packet)
            stream.tick = self.tick
            try:  # small packets go out at once (no Nagle delay against delayed ACKs)
                sock.setsockopt(6, 1, 1)  # IPPROTO_TCP, TCP_NODELAY (Linux and lwIP)
            except Exception:  # noqa: BLE001 - an optimisation some ports lack
                pass
            try:  # connect without blocking, so a blackhole costs timeout_ms only
                sock.connect(ai[-1])
            except OSError as exc:
                if exc.errno not in (errno.EINPROGRESS, errno.EAGAIN):
                    raise
            ready = stream.wait(_POLLOUT, self._timeout_ms)
            if not ready:  # a blackhole
                raise OSError(_ETIMEDOUT, "no answer in %d s" % (self._timeout_ms // 1000))
            if ready & _POLLERR_HUP:
                raise OSError(_ECONNREFUSED)
            tls = self._tls
            if tls:
                if isinstance(tls, tuple):
                    tls = _context(tls)
                # The handshake runs in CONNECT's first writes, without blocking: the
                # TLS socket polls in the direction mbedTLS waits for, so the stream's
                # deadline and tick() (the watchdog) hold through it.
                stream.attach(tls.wrap_socket(sock, server_hostname=self._server_hostname,
                                              do_handshake_on_connect=False))
                tls = None
            codec.write_connect(stream, self._head, *self._login)
            codec.read_connack(stream)
            # The seam into umqtt (its stubs type `sock` as a socket; umqtt only calls
            # read, write and setblocking on it).
            self._stream = self._client.sock = stream  # pyright: ignore[reportAttributeAccessIssue]
            self._pid = 0  # a clean session starts the packet ids again
            for topic in self._subscriptions:
                self._subscribe(topic, self._subscriptions[topic])
        except Exception as exc:  # noqa: BLE001 - OSError, ValueError from the codec, umqtt's
            # AssertionError/IndexError on garbage: all mean "no link".
            why = _cause(exc)
            if why != self._said:  # said once, not on every retry
                self._said = why
                self._say("cannot connect to", self._where() + ":", why)
            if stream:
                self._stream = stream  # for _down() to close
            elif sock:
                sock.close()
            self._down()
            return False
        self._say("connected to", self._where())
        self._said = None
        self._failures, self._pinged_at, self._ping_out = 0, ticks_ms(), False
        self._deliver(None)
        return True

    def poll(self):
        now = ticks_ms()
        stream = self._stream
        if not stream:
            if self._wanted and ticks_diff(now, self._next_try) >= 0:
                self.connect()
            return
        try:
            stream.deadline = ticks_add(now, self._timeout_ms)
            # What already waits is read first: the link is judged on what the broker
            # sent, however long ago poll() last ran (a long download step, say).
            # (self._stream: on_message may have closed the link)
            while self._stream and self._packet() and ticks_diff(stream.deadline, ticks_ms()) > 0:
                pass
            every = self._ping_every_ms
            if every and self._stream:
                # Half-open links only show as silence: a ping not answered within two
                # intervals (no byte since it went out) means the link is dead.
                now = ticks_ms()
                if self._ping_out:
                    if ticks_diff(stream.last_rx, self._pinged_at) >= 0:
                        self._ping_out = False
                    elif ticks_diff(now, self._pinged_at) > every * 2:
                        raise OSError(_ETIMEDOUT, "no answer to a ping in %d ms" % (every * 2))
                if not self._ping_out and ticks_diff(now, self._pinged_at) >= every:
                    self._pinged_at = now  # umqtt never pings itself
                    self._ping_out = True
                    self._client.ping()  # PINGREQ, through the seam
        except Exception as exc:  # noqa: BLE001 - whatever broke, the link goes down and comes back
            self._down(exc)

    def publish(self, topic, msg, qos=0, retain=False):
        stream = self._stream
        if not stream:
            return False
        topic = _bytes(topic)
        msg = _bytes(msg)
        try:
            if not qos:
                stream.deadline = ticks_add(ticks_ms(), self._timeout_ms)
                codec.write_publish(stream, self._head, topic, msg, 0, retain)
                return True
            pid = self._pid = self._pid % 65535 + 1
            attempts = self._retries + 1
            for attempt in range(attempts):
                stream.deadline = ticks_add(ticks_ms(), self._timeout_ms)
                codec.write_publish(stream, self._head, topic, msg, 1, retain, attempt > 0, pid)
                # all attempts together wait about timeout_ms for the PUBACK
                if self._await(pid, self._timeout_ms // attempts):
                    return True
            # no PUBACK after every retry: a dead link
            raise OSError(_ETIMEDOUT, "no PUBACK in %d ms" % self._timeout_ms)
        except Exception as exc:  # noqa: BLE001 - publish() never raises: False, and reconnect
            self._down(exc)
            return False

    def reopen(self):
        """After close(): poll() connects again, from its next call on."""
        self._wanted = True
        self._failures = 0
        self._next_try = ticks_ms()

    def close(self):
        self._wanted = False
        stream = self._stream
        if stream:
            try:
                stream.deadline = ticks_add(ticks_ms(), self._timeout_ms)
                stream.write(b"\xe0\0")  # DISCONNECT
            except Exception:  # noqa: BLE001 - best effort: the socket closes anyway
                pass
        self._down()
