"""A small HTTP/1.1 GET client for image downloads: Range, redirects, chunked bodies,
deadlines, verified TLS.

urequests cannot be used for images: it never verifies TLS certificates, has no
Range support and no deadline on reads. `source()` gives the engine a Body to
`readinto` from: chunk framing is decoded into the caller's buffer, every wait is
bounded by an idle deadline (no byte for idle_ms: "stalled") and an overall one
(total_ms), and `tick()` runs about once a second of waiting or reading, so the
caller can feed a watchdog and keep its MQTT link alive.

Errors are engine.UpdateError "download failed: host H: cause", CTWing step -2
(-3 for a length that contradicts the notice, -1 for a refused configuration).
"""
from micropython import const
from time import ticks_add, ticks_diff, ticks_ms

TOTAL_MS = const(3600000)    # one download attempt, redirects included
_SLICE_MS = const(1000)      # longest wait between two tick() calls
_HOPS = const(5)             # redirects followed
_LINE = const(8192)          # longest header line (presigned Locations run to 2 KiB)
_BITS = const(9)             # 512-byte scratch for reads into the middle of a buffer
_IN = const(1)               # select.POLLIN, POLLOUT, POLLERR|POLLHUP on every port
_OUT = const(4)
_BAD = const(24)



def _scratch():
    sc = memoryview(bytearray(1 << _BITS))
    return [sc[:1 << i] for i in range(_BITS + 1)]


# Scratch views of 1, 2, 4 ... 512 bytes, made at import while the heap is still in
# one piece (later, a fragmented heap may have no 512 free bytes in a row).
_views = _scratch()


def _fail(host, cause, step=-2):
    from fota.engine import UpdateError

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
    """The absolute URL of a redirect's Location `ref` seen from `base` (RFC 9110
    §10.2.2 and RFC 3986 §5.2: absolute, scheme-relative, absolute-path,
    relative-path and query references)."""
    ref = ref.strip()
    c = ref.find("#")
    if c >= 0:
        ref = ref[:c]
    c = ref.find(":")
    scheme, auth, path = _parts(base)
    if c > 0 and ref[0].isalpha() and not [x for x in "/?" if x in ref[:c]]:
        if ref[c:c + 3] != "://":
            return ref                               # urn:, mailto: ... (refused later)
        scheme, auth, new = _parts(ref)              # has its own scheme
    elif ref.startswith("//"):
        auth, new = _parts(scheme + ":" + ref)[1:]
    else:
        new = None
    c = ref.find("?")
    rq = "" if c < 0 else ref[c:]
    ref = ref if c < 0 else ref[:c]
    c = path.find("?")
    bare = path if c < 0 else path[:c]
    if new is not None:
        if not new:
            return "%s://%s" % (scheme, auth)
    elif ref.startswith("/"):
        new = ref + rq
    elif ref:                                        # relative path: merge
        new = bare[:bare.rfind("/") + 1] + ref + rq
    else:
        new = bare + rq if rq else path
    if not new.startswith("/"):
        new = "/" + new
    # remove_dot_segments (RFC 3986 §5.2.4), the query kept as it is
    q = new.find("?")
    query = "" if q < 0 else new[q:]
    segs = (new if q < 0 else new[:q]).split("/")
    out = []
    for s in segs[1:]:
        if s == "..":
            if out:
                out.pop()
        elif s != ".":
            out.append(s)
    tail = "/" if segs[-1] in (".", "..") and out else ""
    return "%s://%s/%s%s%s" % (scheme, auth, "/".join(out), tail, query)


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

    def err(self, cause, step=-2):
        return _fail(self.host, cause, step)

    def _beat(self, now):
        if ticks_diff(now, self._ticked) >= _SLICE_MS:
            self._ticked = now
            if self._tick is not None:
                self._tick()
        if ticks_diff(self._end, now) <= 0:
            raise self.err("took longer than %d s (at byte %d)" % (
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
                raise self.err(what or "stalled: no data for %d s (at byte %d)" % (
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
                raise self.err(_why(exc))
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
                if not self._left and not self._chunk():
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
            raise self.err("ended early: the server closed after %d of %d bytes" % (
                self.done, self.limit))
        return got

    def _chunk(self):
        """Read the next chunk's size line (after the CRLF closing the previous
        chunk); False after the last chunk (its trailer is never needed)."""
        if self._chunks < 0:
            return False
        c = 10
        if self._chunks:
            c = self._byte()
            if c == 13:
                c = self._byte()
        self._chunks += 1
        size = digits = n = 0
        while c == 10:
            c = self._byte()
            d = c - 48
            if not 0 <= d <= 9:
                d = (c | 32) - 87
                if not 10 <= d <= 15:
                    break
            if size >= 0x1000000:
                digits = 0
                break
            size = size * 16 + d
            digits += 1
            c = 10
        if not digits or c not in (59, 32, 9, 13, 10):     # ; SP HT CR LF
            raise self.err("bad chunk header after %d bytes" % self.done)
        while c != 10:                               # extensions: skipped
            c = self._byte()
            n += 1
            if c < 0 or n > _LINE:
                raise self.err("bad chunk header after %d bytes" % self.done)
        if not size:
            self._chunks = -1
            return False
        self._sent += size
        if 0 <= self.limit < self._sent:
            raise self.err("server sends more than the notice's %d bytes" % self.limit, -3)
        self._left = size
        return True

    def wrap(self, ctx):
        """TLS over the connected socket; the handshake runs in the first writes,
        without blocking, so the deadlines and tick() hold (MicroPython's ssl
        polls in the direction mbedTLS waits for)."""
        p = self._p
        p.unregister(self.s)
        self.s = ctx.wrap_socket(self.s, server_hostname=self.host,
                                 do_handshake_on_connect=False)
        p.register(self.s, _IN | _OUT)

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def _line(b):
    """One header line without its line end (None at the end of the stream)."""
    line = bytearray()
    while True:
        c = b._byte()
        if c < 0:
            return None
        if c == 10:
            return bytes(line).rstrip(b"\r")
        line.append(c)
        if len(line) > _LINE:
            raise b.err("header line too long")


def _head(b):
    """The response head: (status, content_length, range_start, range_total,
    location), -1/None where a header is absent."""
    line = _line(b)
    if not line:
        raise b.err("connection closed before the response")
    length = rstart = rtotal = -1
    location = None
    try:
        if line[:7] != b"HTTP/1.":
            raise ValueError
        status = int(line[9:12])
        n = 0
        while True:
            line = _line(b)
            if not line:
                if line is None:
                    raise ValueError             # closed within the head
                break
            n += len(line)
            if n > 4 * _LINE:
                raise b.err("response head too long")
            k = line.find(b":")
            name = line[:k].lower()
            v = line[k + 1:].strip()
            if name == b"content-length":
                length = int(v)
            elif name == b"content-range":       # bytes START-END/TOTAL
                rstart = int(v[6:v.find(b"-")])
                if v[-1:] != b"*":
                    rtotal = int(v[v.find(b"/") + 1:])
            elif name == b"location":
                location = v.decode()
            elif name == b"transfer-encoding":
                v = v.lower()
                if v == b"chunked":
                    b._left = 0                  # framing overrides Content-Length
                    length = -1
                elif v != b"identity":
                    raise b.err("unsupported transfer encoding '%s'" % v.decode())
    except (ValueError, IndexError):
        raise b.err("malformed HTTP response")
    return status, -1 if b._left == 0 else length, rstart, rtotal, location


def get(url, start=0, timeout_ms=10000, ca=None, insecure=False, idle_ms=None,
        total_ms=TOTAL_MS, tick=None, end=None):
    """One GET (with `Range: bytes=start-` when start > 0).

    Returns (body, status, content_length, range_start, range_total, location),
    -1/None where a header is absent (content_length -1 for a chunked body).
    timeout_ms bounds the connect and the TLS handshake, idle_ms (default:
    timeout_ms) the silence between two bytes, `end` (ticks_ms) the whole attempt
    (default now + total_ms). The caller closes the body.
    """
    import errno
    import select
    import socket

    tls, host, port, path = _split(url)
    if end is None:
        end = ticks_add(ticks_ms(), total_ms)
    ctx = None
    if tls:
        from fota.tls import context

        try:
            ctx = context(ca, insecure, "image download")
        except ValueError as exc:
            raise _fail(host, "https download refused: %s" % exc, -1)
    try:
        ai = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0]
    except (OSError, IndexError):
        raise _fail(host, "DNS lookup failed")
    s = socket.socket(ai[0], socket.SOCK_STREAM)
    p = select.poll()
    b = Body(host, s, p, idle_ms or timeout_ms, total_ms, end, tick)
    try:
        s.setblocking(False)
        p.register(s, _OUT)
        try:
            s.connect(ai[-1])
        except OSError as exc:
            if exc.args[0] not in (errno.EINPROGRESS, errno.EAGAIN):
                raise b.err("connection failed: " + _why(exc))
        until = ticks_add(ticks_ms(), timeout_ms)
        if b.wait(until, "connection failed: no answer in %d s" % (timeout_ms // 1000)) & _BAD:
            try:
                s.connect(ai[-1])                    # tells why (Linux, lwIP)
            except OSError as exc:
                raise b.err("connection failed: " + _why(exc))
            raise b.err("connection failed")
        if tls:
            b.wrap(ctx)
        hp = "[%s]" % host if ":" in host else host
        if port != (443 if tls else 80):
            hp += ":%d" % port
        req = "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n" % (path, hp)
        if start > 0:
            req += "Range: bytes=%d-\r\n" % start
        req = (req + "\r\n").encode()
        sent = 0
        while sent < len(req):
            try:
                r = b.s.write(req[sent:])            # with TLS, the first shake hands
            except ValueError as exc:                # mbedTLS refused the certificate
                from fota.tls import failure

                raise b.err(failure(exc))
            except OSError as exc:
                raise b.err(("TLS handshake failed: " if tls and not sent else "") + _why(exc))
            if r:
                sent += r
            else:
                b.wait(until, "TLS handshake timed out" if tls else "send timed out")
        p.modify(b.s, _IN)
        for _ in p.ipoll(0):       # ipoll allocates its result on the first call only
            pass
        b._last = ticks_ms()
        return (b,) + _head(b)
    except BaseException:
        b.close()
        raise


def source(url, timeout_ms=10000, ca=None, insecure=False, idle_ms=None,
           total_ms=TOTAL_MS, tick=None, downgrade=False):
    """An engine source for `url`: `open(offset, size) -> (stream, offset served)`.

    Resumes with Range; a server that answers 200, 416 or another range means
    starting from the top. Follows up to 5 redirects (301, 302, 303, 307, 308;
    relative Locations resolved); https -> http only with `downgrade`.
    timeout_ms bounds the connect and the TLS handshake, idle_ms the silence
    between two bytes (default: timeout_ms), total_ms each attempt (default one
    hour); tick() runs about every second while waiting or reading.
    """
    if url.startswith("https://") and not ca and not insecure:
        # Refuse before any byte moves: an unverified image server is a hole.
        raise _fail(_parts(url)[1], "https download refused: no CA configured", -1)

    def open_(offset, size):
        end = ticks_add(ticks_ms(), total_ms)
        where = url
        hops = 0
        while True:
            b, status, length, rstart, rtotal, location = get(
                where, offset, timeout_ms, ca, insecure, idle_ms, total_ms, tick, end)
            if status in (301, 302, 303, 307, 308):
                b.close()
                hops += 1
                if not location or hops > _HOPS:
                    raise b.err("too many redirects (more than %d)" % _HOPS if location else
                                "HTTP %d without a Location" % status)
                nxt = resolve(where, location)
                if where[:6].lower() == "https:" and nxt[:6].lower() != "https:":
                    if not downgrade:
                        raise b.err("https -> http redirect to %s refused (insecure "
                                    "downloads not allowed)" % _parts(nxt)[1])
                    print("fota: WARNING: following an https -> http redirect to",
                          _parts(nxt)[1], "(insecure downloads allowed)")
                where = nxt
                continue
            if status == 206 and offset > 0 and rstart == offset and rtotal in (-1, size):
                b.limit = size - offset
                return b, offset
            if status == 200:
                if length >= 0 and length != size:
                    b.close()
                    raise b.err("server sends %d bytes, the notice says %d" % (length, size),
                                -3)
                b.limit = size
                return b, 0
            b.close()
            if offset > 0 and status in (206, 416):
                offset = 0                      # the server won't resume here: from the top
                continue
            raise b.err("HTTP %d" % status)

    return open_
