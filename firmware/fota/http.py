"""A small HTTP/1.1 GET client for image downloads: Range, deadlines, verified TLS.

urequests cannot be used for images: it never verifies TLS certificates, has no
Range support and no deadline on reads. This client sends one GET and hands back
the socket positioned at the body, so the engine `readinto`s straight from it.
Errors are raised as engine.UpdateError with CTWing step -2 (-3 for a length
that contradicts the notice, -1 for a refused configuration).
"""


def _fail(reason, step=-2):
    from fota.engine import UpdateError

    return UpdateError(step, reason)


def _split(url):
    """'http(s)://host[:port]/path?query' -> (tls, host, port, path)."""
    tls = url.startswith("https://")
    if not tls and not url.startswith("http://"):
        raise _fail("unsupported url scheme")
    rest = url[8:] if tls else url[7:]
    slash = rest.find("/")
    query = rest.find("?")
    if slash < 0 or 0 <= query < slash:
        slash = query
    host = rest if slash < 0 else rest[:slash]
    path = "/" if slash < 0 else rest[slash:]
    if path[0] == "?":
        path = "/" + path
    port = 443 if tls else 80
    colon = host.rfind(":")
    if colon > 0 and "]" not in host[colon:]:
        try:
            port = int(host[colon + 1:])
        except ValueError:
            raise _fail("bad port in url")
        host = host[:colon]
    return tls, host.strip("[]"), port, path


def _headers(sock):
    """Read the response head: (status, content_length, range_start, range_total,
    location), -1/None where a header is absent."""
    line = sock.readline()
    if not line.startswith(b"HTTP/1."):
        raise _fail("no HTTP response")
    status = int(line[9:12])
    length = rstart = rtotal = -1
    location = None
    while True:
        line = sock.readline()
        if not line:
            raise _fail("connection closed in headers")
        if line == b"\r\n" or line == b"\n":
            return status, length, rstart, rtotal, location
        colon = line.find(b":")
        name = line[:colon].lower()
        value = line[colon + 1:].strip()
        if name == b"content-length":
            length = int(value)
        elif name == b"content-range" and value.startswith(b"bytes "):
            rstart = int(value[6:value.find(b"-")])
            total = value[value.find(b"/") + 1:]
            if total != b"*":
                rtotal = int(total)
        elif name == b"location":
            location = value.decode()
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            raise _fail("chunked transfer encoding is not supported for images")


def get(url, start=0, timeout_ms=10000, ca=None, insecure=False):
    """One GET (with `Range: bytes=start-` when start > 0).

    Returns (sock, status, content_length, range_start, range_total, location),
    -1/None where a header is absent. The caller closes the socket.
    """
    import socket

    # (Three functions, not one: loading this module then needs no large contiguous
    # piece of a fragmented heap.)
    tls, host, port, path = _split(url)
    try:
        addr = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0][-1]
    except OSError:
        raise _fail("cannot resolve " + host)
    sock = socket.socket()
    try:
        sock.settimeout(timeout_ms / 1000)     # every read and write, not just connect
        sock.connect(addr)
        if tls:
            from fota.tls import context

            try:
                sock = context(ca, insecure).wrap_socket(sock, server_hostname=host)
            except (OSError, ValueError) as exc:
                # mbedTLS reports a refused certificate as ValueError
                raise _fail("TLS handshake failed: %s" % str(exc).strip())
        req = "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n" % (path, host)
        if start > 0:
            req += "Range: bytes=%d-\r\n" % start
        sock.write(req.encode() + b"\r\n")
        return (sock,) + _headers(sock)
    except OSError as exc:
        sock.close()
        raise _fail("connection failed: %s" % exc)
    except ValueError:
        sock.close()
        raise _fail("malformed HTTP response")
    except BaseException:
        sock.close()
        raise


def source(url, timeout_ms=10000, ca=None, insecure=False):
    """An engine source for `url`: `open(offset, size) -> (stream, offset served)`.

    Resumes with Range; a server that answers 200, 416 or another range means
    starting from the top. Follows a few redirects.
    """
    if url.startswith("https://") and not ca and not insecure:
        # Refuse before any byte moves: an unverified image server is a hole.
        raise _fail("https download refused: no CA configured", -1)

    def open_(offset, size):
        where = url
        for _ in range(4):
            sock, status, length, rstart, rtotal, location = get(
                where, offset, timeout_ms, ca, insecure)
            if 300 < status < 309 and location:
                sock.close()
                where = location
                continue
            if status == 206 and offset > 0 and rstart == offset and rtotal in (-1, size):
                return sock, offset
            if status == 200:
                if length >= 0 and length != size:
                    sock.close()
                    raise _fail("server sends %d bytes, the notice says %d" % (length, size), -3)
                return sock, 0
            sock.close()
            if offset > 0 and status in (206, 416):
                offset = 0                      # the server won't resume here: from the top
                continue
            raise _fail("HTTP %d" % status)
        raise _fail("too many redirects")

    return open_
