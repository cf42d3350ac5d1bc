"""Chunked transfer coding (RFC 9112 §7.1) for fota.http: loaded only when a server
sends `Transfer-Encoding: chunked`, so plain downloads never hold this code."""
from micropython import const

_LINE = const(16384)         # longest chunk line (extensions are skipped)


def next_chunk(b):
    """Read the next chunk's size line of Body `b` (after the CRLF closing the previous
    chunk) and set b._left to its size; False after the last chunk (its trailer is
    never needed). Allocates nothing but the error on a bad line."""
    if b._chunks < 0:
        return False
    c = 10
    if b._chunks:
        c = b._byte()
        if c == 13:
            c = b._byte()
    b._chunks += 1
    size = digits = n = 0
    while c == 10:
        c = b._byte()
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
        raise b.fail("bad chunk header after %d bytes" % b.done)
    while c != 10:                                   # extensions: skipped
        c = b._byte()
        n += 1
        if c < 0 or n > _LINE:
            raise b.fail("bad chunk header after %d bytes" % b.done)
    if not size:
        b._chunks = -1
        return False
    b._sent += size
    if 0 <= b.limit < b._sent:
        raise b.fail("server sends more than the notice's %d bytes" % b.limit, -3)
    b._left = size
    return True
