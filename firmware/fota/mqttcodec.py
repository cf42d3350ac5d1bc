"""MQTT 3.1.1 on the wire: the packets the link sends and the acknowledgements it reads.

No sockets, clocks or state: each function takes a stream (`write(buf[, n])`,
`read(n)`) and, for the fixed parts, a scratch buffer of 5 bytes or more that the
caller allocated once. Topics, client ids and payloads are bytes (MQTT lengths count
bytes: micropython-lib #746). The link (fota/mqtt.py) owns connectivity; umqtt.simple,
underneath, decodes what the broker sends unasked (PUBLISH, PINGRESP) and answers
QoS 1 deliveries. A protocol violation raises ValueError.
"""
from micropython import const

_PUBACK = const(0x40)
_SUBACK = const(0x90)
# CONNACK return codes 1..5 in words (MQTT 3.1.1 section 3.2.2.3)
REFUSED = ("unacceptable protocol version", "client id rejected", "server unavailable",
           "bad user name or password", "not authorized")


def put_length(buf, at, n):
    """Write the remaining length `n` into buf at `at`; returns the index after it."""
    while n > 0x7F:
        buf[at] = n & 0x7F | 0x80
        n >>= 7
        at += 1
    buf[at] = n
    return at + 1


def _string(stream, buf, s):
    buf[0] = len(s) >> 8
    buf[1] = len(s) & 0xFF
    stream.write(buf, 2)
    stream.write(s)


def write_connect(stream, buf, client_id, user=None, password=None, keepalive=0):
    """CONNECT with a clean session; `user`/`password` None leaves them out."""
    size = 12 + len(client_id)
    flags = 0x02  # clean session
    if user is not None:
        size += 2 + len(user)
        flags |= 0x80
        if password is not None:
            size += 2 + len(password)
            flags |= 0x40
    buf[0] = 0x10
    stream.write(buf, put_length(buf, 1, size))
    stream.write(b"\0\4MQTT\4")  # protocol name and level 4 (3.1.1)
    buf[0] = flags
    buf[1] = keepalive >> 8 & 0xFF
    buf[2] = keepalive & 0xFF
    stream.write(buf, 3)
    _string(stream, buf, client_id)
    if flags & 0x80:
        _string(stream, buf, user)
    if flags & 0x40:
        _string(stream, buf, password)


def read_connack(stream):
    """Read the answer to CONNECT; ValueError unless the connection was accepted (a
    refusal says the broker's reason: "refused: bad user name or password (code 4)")."""
    b = stream.read(4)
    if not b or len(b) != 4 or b[0] != 0x20 or b[1] != 2:
        raise ValueError("no CONNACK")
    code = b[3]
    if code:
        raise ValueError("refused: %s (code %d)" % (
            REFUSED[code - 1] if code <= len(REFUSED) else "unknown reason", code))


def write_subscribe(stream, buf, pid, topic, qos):
    buf[0] = 0x82
    n = put_length(buf, 1, 5 + len(topic))
    buf[n] = pid >> 8
    buf[n + 1] = pid & 0xFF
    stream.write(buf, n + 2)
    _string(stream, buf, topic)
    buf[0] = qos
    stream.write(buf, 1)


def write_publish(stream, buf, topic, msg, qos=0, retain=False, dup=False, pid=0):
    """PUBLISH with QoS 0 or 1 (`pid` only for QoS 1; `dup` on a retransmission)."""
    buf[0] = 0x30 | dup << 3 | qos << 1 | retain
    stream.write(buf, put_length(buf, 1, 2 + len(topic) + len(msg) + (2 if qos else 0)))
    _string(stream, buf, topic)
    if qos:
        buf[0] = pid >> 8
        buf[1] = pid & 0xFF
        stream.write(buf, 2)
    stream.write(msg)


def read_ack(stream, op):
    """Consume the rest of a packet whose first byte `op` umqtt handed back unread.

    Returns the packet id of a PUBACK or SUBACK, 0 for another kind (read and
    dropped, so the stream stays in step). ValueError: a refused subscription, or a
    packet cut short.
    """
    n = shift = 0
    while True:
        b = stream.read(1)
        if not b or shift > 21:
            raise ValueError("bad length")
        n |= (b[0] & 0x7F) << shift
        if not b[0] & 0x80:
            break
        shift += 7
    body = stream.read(n) if n else b""
    if n and len(body) != n:
        raise ValueError("short packet")
    kind = op & 0xF0
    if kind != _PUBACK and kind != _SUBACK:
        return 0
    if n < 2 or (kind == _SUBACK and (n < 3 or body[2] == 0x80)):
        raise ValueError("bad ack")
    return body[0] << 8 | body[1]
