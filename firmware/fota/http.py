"""A small HTTP/1.1 GET client for image downloads: Range, redirects, chunked bodies,
deadlines, verified TLS.

urequests cannot be used for images: it never verifies TLS certificates, has no
Range support and no deadline on reads. `source()` gives the engine a Body to
`readinto` from: chunk framing is decoded into the caller's buffer, every wait is
bounded by an idle deadline (no byte for idle_ms: "stalled") and an overall one
(total_ms), and `tick()` runs about once a second of waiting or reading, so the
caller can feed a watchdog and keep its MQTT link alive.

Errors are errors.UpdateError "download failed: host H: cause", CTWing step -2
(-3 for a length that contradicts the notice, -1 for a refused configuration).
"""
from micropython import const
from time import ticks_add, ticks_diff, ticks_ms

TOTAL_MS = const(3600000)    # one download attempt, redirects included
_SLICE_MS = const(1000)      # longest wait between two tick() calls
_LINE = const(16384)         # longest response head (presigned Locations run to 2 KiB)
_BITS = const(7)             # 128-byte scratch for reads into the middle of a buffer
_IN = const(1)               # select.POLLIN, POLLOUT, POLLERR|POLLHUP on every port
_OUT = const(4)
_BAD = const(24)


def _scratch():
    sc = memoryview(bytearray(1 << _BITS))
    return [sc[:1 << i] for i in range(_BITS + 1)]


# Scratch views of 1, 2, 4 ... 128 bytes, made at import while the heap is still in
# one piece (later, a fragmented heap may have no such piece free).
_views = _scratch()


def _fail(host, cause, step=-2):
    from fota.errors import UpdateError

    return UpdateError(step, "download failed: host %s: %s" % (host, cause))


def _parts(url):
    """url -> (scheme, authority, path without the fragment)."""
    i = url.find("://")
    rest = url[i + 3:] if i > 0 else url
    end = len(rest)
    for c in "/?#":
        j = rest.find(c)
        if 0 <= j < end:
            end = j
    path = rest[end:]
    j = path.find("#")
    return url[:i].lower() if i > 0 else "", rest[:end], path if j < 0 else path[:j]


def _split(url):
    """'http(s)://[user@]host[:port]/path?query' -> (tls, host, port, path)."""
    scheme, host, path = _parts(url)
    host = host[host.rfind("@") + 1:]
    if scheme not in ("http", "https"):
        raise _fail(host or "?", "unsupported url scheme '%s'" % scheme)
    tls = scheme == "https"
    port = 443 if tls else 80
    colon = host.rfind(":")
    if colon > 0 and "]" not in host[colon:]:
        try:
            port = int(host[colon + 1:])
        except ValueError:
            port = 0
        host = host[:colon]
    host = host.strip("[]")
    if not host or not 0 < port < 65536:
        raise _fail(host or "?", "bad url")
    return tls, host, port, path if path.startswith("/") else "/" + path


def resolve(base, ref):
    """The absolute URL of a redirect's Location `ref` seen from `base` (RFC 3986 §5.2);
    in fota.httpredirect, loaded only when a server redirects."""
    from fota.httpredirect import resolve

    return resolve(base, ref, _parts)


def _why(exc):
    import errno

    if exc.args and exc.args[0] == errno.ECONNREFUSED:
        return "connection refused"
    return "%s" % (exc,)


class Body:
    """One connection and its response body, as a stream.

    `readinto(buf, n)` fills n bytes (all of buf by default) unless the body ends
    first, and returns how many it put there. The socket is non-blocking: each
    wait is a poll of at most a second, so deadlines hold however the server
    trickles. Once the head is read nothing here allocates: reads into the middle
    of the caller's buffer go through fixed scratch views (slicing would allocate).
    """

    def __init__(self, host, s, p, idle_ms, total_ms, end, tick):
        self.host = host
        self.s = s
        self._p = p
        self._idle = idle_ms
        self._total = total_ms
        self._end = end
        self._tick = tick
        self._last = self._ticked = ticks_ms()
        self._left = -1          # bytes left in the current chunk; -1: not chunked
        self._chunks = 0         # chunks begun (-1 once the last one was seen)
        self._sent = 0           # bytes the chunk headers announced
        self.limit = -1          # bytes the caller expects (-1: unknown)
        self.done = 0            # body bytes handed out
        self._one = bytearray(1)
        self._chunk = None       # fota.httpchunk.next_chunk for a chunked body

    def fail(self, cause, step=-2):
        """The UpdateError for `cause` at this host (fota.httpchunk and httpredirect
        raise theirs through it: they import nothing from here)."""
        return _fail(self.host, cause, step)

    def _beat(self, now):
        if ticks_diff(now, self._ticked) >= _SLICE_MS:
            self._ticked = now
            if self._tick is not None:
                self._tick()
        if ticks_diff(self._end, now) <= 0:
            raise _fail(self.host, "took longer than %d s (at byte %d)" % (
                self._total // 1000, self.done))

    def wait(self, until, what):
        """Wait for the socket, polling at most a second at a time; the event
        flags. `until` bounds a connect or handshake, else the idle deadline
        counts from the last byte received."""
        while True:
            now = ticks_ms()
            self._beat(now)
            left = ticks_diff(until, now) if what else self._idle - ticks_diff(now, self._last)
            if left <= 0:
                raise _fail(self.host, what or "stalled: no data for %d s (at byte %d)" % (
                    self._idle // 1000, self.done))
            rest = ticks_diff(self._end, now)
            for ev in self._p.ipoll(min(left, rest, _SLICE_MS)):
                return ev[1]

    def _read(self, buf, off, k):
        """One read of 1..k bytes into buf[off:], waiting as the deadlines allow;
        0 at the end of the stream."""
        while True:
            try:
                if off:
                    i = _BITS                    # the largest scratch view <= k
                    while (1 << i) > k:
                        i -= 1
                    v = _views[i]
                    r = self.s.readinto(v)
                    if r:
                        # The whole view is copied; what lies past r is overwritten
                        # by the next reads (off + len(v) <= off + k stays in buf).
                        buf[off:off + len(v)] = v
                else:
                    r = self.s.readinto(buf, k)
            except OSError as exc:
                raise _fail(self.host, _why(exc))
            if r is not None:
                if r:
                    self._last = ticks_ms()
                    self._beat(self._last)
                return r
            self.wait(0, None)

    def _byte(self):
        one = self._one
        return one[0] if self._read(one, 0, 1) else -1

    def readinto(self, buf, n=-1):
        if n < 0 or n > len(buf):
            n = len(buf)
        got = 0
        while got < n:
            k = n - got
            if self._left >= 0:                      # chunked
                if not self._left and not self._chunk(self):
                    break
                if k > self._left:
                    k = self._left
            r = self._read(buf, got, k)
            if not r:
                break
            got += r
            if self._left > 0:
                self._left -= r
        self.done += got
        if got < n and 0 <= self.done < self.limit:
            raise _fail(self.host, "ended early: the server closed after %d of %d bytes" % (
                self.done, self.limit))
        return got

    def wrap(self, ctx):
        """TLS over the connected socket. The handshake runs in the first writes,
        without blocking, so the deadlines and tick() hold (MicroPython's ssl
        polls in the direction mbedTLS waits for)."""
        self._p.unregister(self.s)
        self.s = ctx.wrap_socket(self.s, server_hostname=self.host,
                                 do_handshake_on_connect=False)
        self._p.register(self.s, _IN | _OUT)

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def _head(b):
    """The response head: [status, content_length, range_start, range_total,
    location], -1/None where a header is absent (ValueError if malformed)."""
    h = None
    n = 0
    while True:
        line = bytearray()
        c = 0
        while c != 10:
            c = b._byte()
            if c < 0:
                raise _fail(b.host, "connection closed %s the response head" % (
                    "before" if h is None and not line else "in"))
            line.append(c)
        n += len(line)
        if n > _LINE:
            raise _fail(b.host, "response head too long")
        line = bytes(line).strip()
        if h is None:
            if line[:7] != b"HTTP/1.":
                raise ValueError
            h = [int(line[9:12]), -1, -1, -1, None]
            continue
        if not line:
            return h
        k = line.find(b":")
        name = line[:k].lower()
        v = line[k + 1:].strip()
        if name == b"content-length":
            h[1] = int(v)
        elif name == b"content-range":           # bytes START-END/TOTAL
            h[2] = int(v[6:v.find(b"-")])
            if v[-1:] != b"*":
                h[3] = int(v[v.find(b"/") + 1:])
        elif name == b"location":
            h[4] = v.decode()
        elif name == b"transfer-encoding":
            v = v.lower()
            if v == b"chunked":
                from fota.httpchunk import next_chunk

                b._chunk = next_chunk            # (looked up once: nothing per chunk)
                b._left = 0                      # the framing overrides Content-Length
            elif v != b"identity":
                raise _fail(b.host, "unsupported transfer encoding '%s'" % v.decode())


def _connect(b, ai, timeout_ms):
    """A non-blocking connect bounded by timeout_ms; that deadline (ticks)."""
    import errno

    s = b.s
    s.setblocking(False)
    b._p.register(s, _OUT)
    try:
        s.connect(ai[-1])
    except OSError as exc:
        if exc.args[0] not in (errno.EINPROGRESS, errno.EAGAIN):
            raise _fail(b.host, "connection failed: " + _why(exc))
    until = ticks_add(ticks_ms(), timeout_ms)
    if b.wait(until, "connection failed: no answer in %d s" % (timeout_ms // 1000)) & _BAD:
        try:
            s.connect(ai[-1])                        # tells why (Linux, lwIP)
        except OSError as exc:
            raise _fail(b.host, "connection failed: " + _why(exc))
        raise _fail(b.host, "connection failed")
    return until


def _send(b, req, tls, until):
    """Write the request; with TLS the first writes shake hands (until bounds it)."""
    sent = 0
    while sent < len(req):
        try:
            r = b.s.write(req[sent:])
        except ValueError as exc:                    # mbedTLS refused the certificate
            from fota.tls import failure

            raise _fail(b.host, failure(exc))
        except OSError as exc:
            raise _fail(b.host, ("TLS handshake failed: " if tls and not sent else "") + _why(exc))
        if r:
            sent += r
        else:
            b.wait(until, "TLS handshake timed out" if tls else "send timed out")


def get(url, start=0, timeout_ms=10000, ca=None, insecure=False, idle_ms=None,
        total_ms=TOTAL_MS, tick=None, end=None, ctx=None):
    """One GET (with `Range: bytes=start-` when start > 0).

    Returns (body, status, content_length, range_start, range_total, location),
    -1/None where a header is absent (content_length -1 for a chunked body).
    timeout_ms bounds the connect and the TLS handshake, idle_ms (default:
    timeout_ms) the silence between two bytes, `end` (ticks_ms) the whole attempt
    (default now + total_ms). `ctx`: the SSLContext to use (default: one made from
    ca and insecure). The caller closes the body.
    """
    import select
    import socket

    # (Small functions: loading this module then needs no large contiguous piece
    # of a fragmented heap.)
    tls, host, port, path = _split(url)
    if end is None:
        end = ticks_add(ticks_ms(), total_ms)
    if tls and ctx is None:
        ctx = _context(host, ca, insecure)
    try:
        ai = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0]
    except (OSError, IndexError):
        raise _fail(host, "DNS lookup failed")
    p = select.poll()
    b = Body(host, socket.socket(ai[0], socket.SOCK_STREAM), p, idle_ms or timeout_ms,
             total_ms, end, tick)
    try:
        until = _connect(b, ai, timeout_ms)
        if tls:
            b.wrap(ctx)
        hp = "[%s]" % host if ":" in host else host
        if port != (443 if tls else 80):
            hp += ":%d" % port
        req = "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n" % (path, hp)
        if start > 0:
            req += "Range: bytes=%d-\r\n" % start
        _send(b, (req + "\r\n").encode(), tls, until)
        p.modify(b.s, _IN)
        for _ in p.ipoll(0):       # ipoll allocates its result on the first call only
            pass
        b._last = ticks_ms()
        try:
            h = _head(b)
        except (ValueError, IndexError):
            raise _fail(b.host, "malformed HTTP response")
        if not b._left:
            h[1] = -1
        return b, h[0], h[1], h[2], h[3], h[4]
    except BaseException:
        b.close()
        raise


def _context(host, ca, insecure):
    from fota.tls import context

    try:
        return context(ca, insecure, "image download")
    except ValueError as exc:
        raise _fail(host, "https download refused: %s" % exc, -1)


def _open(url, offset, size, opts):
    timeout_ms, ca, insecure, idle_ms, total_ms, tick, downgrade, ctx = opts
    end = ticks_add(ticks_ms(), total_ms)
    hops = 0
    while True:
        b, status, length, rstart, rtotal, location = get(
            url, offset, timeout_ms, ca, insecure, idle_ms, total_ms, tick, end, ctx)
        if status in (301, 302, 303, 307, 308):
            b.close()
            hops += 1
            from fota.httpredirect import follow

            url = follow(b, _parts, url, location, status, hops, downgrade)
            continue
        if status == 206 and offset > 0 and rstart == offset and rtotal in (-1, size):
            b.limit = size - offset
            return b, offset
        if status == 200:
            if length >= 0 and length != size:
                b.close()
                raise _fail(b.host, "server sends %d bytes, the notice says %d" % (
                    length, size), -3)
            b.limit = size
            return b, 0
        b.close()
        if offset > 0 and status in (206, 416):
            offset = 0                          # the server won't resume here: from the top
            continue
        raise _fail(b.host, "HTTP %d" % status)


def source(url, timeout_ms=10000, ca=None, insecure=False, idle_ms=None,
           total_ms=TOTAL_MS, tick=None, downgrade=False):
    """An engine source for `url`: `open(offset, size) -> (stream, offset served)`.

    Resumes with Range; a server that answers 200, 416 or another range means
    starting from the top. Follows up to 5 redirects (301, 302, 303, 307, 308;
    relative Locations resolved); https -> http only with `downgrade`.
    timeout_ms bounds the connect and the TLS handshake, idle_ms the silence
    between two bytes (default: timeout_ms), total_ms each attempt (default one
    hour); tick() runs about every second while waiting or reading (an
    exception it raises ends the download).
    """
    if url.startswith("https://") and not ca and not insecure:
        # Refuse before any byte moves: an unverified image server is a hole.
        raise _fail(_parts(url)[1], "https download refused: no CA configured", -1)
    # The TLS context (certificates parsed) is made once, now: early, while the
    # heap is in larger pieces (mbedTLS allocates from it on some ports), and
    # shared by the attempts and redirects (a redirect from http makes its own).
    ctx = _context(_parts(url)[1], ca, insecure) if url[:6].lower() == "https:" else None
    opts = (timeout_ms, ca, insecure, idle_ms, total_ms, tick, downgrade, ctx)
    return lambda offset, size: _open(url, offset, size, opts)
