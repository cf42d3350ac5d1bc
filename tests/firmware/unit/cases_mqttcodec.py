# fota.mqttcodec on the unix port, against fake sockets (as micropython-lib's
# test_umqtt_simple.py does), and the link's one seam into umqtt.simple.
import io

from checks import equal, raises
from fota import mqttcodec as codec
from umqtt.simple import MQTTClient


class FakeSocket:
    """What the codec and umqtt see: write(buf[, n]), read(n), setblocking(flag).
    Reads come from `incoming`; non-blocking reads of nothing return None."""

    def __init__(self, incoming=b""):
        self.sent = io.BytesIO()
        self.incoming = io.BytesIO(incoming)
        self.blocking = True

    def write(self, buf, n=None):
        self.sent.write(bytes(buf) if n is None else bytes(buf[:n]))

    def read(self, n):
        data = self.incoming.read(n)
        return None if not data and not self.blocking else data

    def setblocking(self, flag):
        self.blocking = flag

    def out(self):
        return self.sent.getvalue()


def head():
    return bytearray(5)


def test_remaining_length_at_each_boundary():
    for n, want in ((0, b"\x00"), (127, b"\x7f"), (128, b"\x80\x01"), (16383, b"\xff\x7f"),
                    (16384, b"\x80\x80\x01"), (2097151, b"\xff\xff\x7f"),
                    (2097152, b"\x80\x80\x80\x01"), (268435455, b"\xff\xff\xff\x7f")):
        buf = bytearray(6)
        end = codec.put_length(buf, 1, n)
        equal(bytes(buf[1:end]), want)


def test_connect_without_login():
    s = FakeSocket()
    codec.write_connect(s, head(), b"dev1", None, None, 60)
    equal(s.out(), b"\x10\x10\x00\x04MQTT\x04\x02\x00\x3c\x00\x04dev1")


def test_connect_with_user_and_password():
    s = FakeSocket()
    codec.write_connect(s, head(), b"d", b"user", b"pw", 300)
    equal(s.out(), b"\x10\x17\x00\x04MQTT\x04\xc2\x01\x2c\x00\x01d\x00\x04user\x00\x02pw")


def test_connect_with_user_only_sets_only_the_user_flag():
    s = FakeSocket()
    codec.write_connect(s, head(), b"d", b"u", None, 0)
    equal(s.out(), b"\x10\x10\x00\x04MQTT\x04\x82\x00\x00\x00\x01d\x00\x01u")


def test_connack_accepted_refused_or_garbage():
    codec.read_connack(FakeSocket(b"\x20\x02\x00\x00"))
    raises(ValueError, codec.read_connack, FakeSocket(b"\x20\x02\x00\x05"),
           says="refused: not authorized (code 5)")
    raises(ValueError, codec.read_connack, FakeSocket(b"\x20\x02\x00\x04"),
           says="refused: bad user name or password (code 4)")
    raises(ValueError, codec.read_connack, FakeSocket(b"\x20\x02\x00\x09"),
           says="refused: unknown reason (code 9)")
    raises(ValueError, codec.read_connack, FakeSocket(b"\xff\xfe\xfd\xfc"), says="CONNACK")
    raises(ValueError, codec.read_connack, FakeSocket(b"\x20"), says="CONNACK")
    raises(ValueError, codec.read_connack, FakeSocket(b""), says="CONNACK")


def test_subscribe_with_a_long_topic():
    # umqtt 1.3.4 packs this length in one byte; 200 + 5 needs two.
    s = FakeSocket()
    topic = b"t" * 200
    codec.write_subscribe(s, head(), 0x1234, topic, 1)
    equal(s.out(), b"\x82\xcd\x01\x12\x34\x00\xc8" + topic + b"\x01")


def test_publish_qos0_and_retain():
    s = FakeSocket()
    codec.write_publish(s, head(), b"a/b", b"hi")
    codec.write_publish(s, head(), b"a/b", b"hi", 0, True)
    equal(s.out(), b"\x30\x07\x00\x03a/bhi" + b"\x31\x07\x00\x03a/bhi")


def test_publish_qos1_carries_the_id_and_dup_on_a_retry():
    s = FakeSocket()
    codec.write_publish(s, head(), b"t", b"x", 1, False, False, 258)
    codec.write_publish(s, head(), b"t", b"x", 1, False, True, 258)
    equal(s.out(), b"\x32\x06\x00\x01t\x01\x02x" + b"\x3a\x06\x00\x01t\x01\x02x")


def test_publish_of_a_large_payload_uses_a_longer_length():
    s = FakeSocket()
    codec.write_publish(s, head(), b"t", b"p" * 300, 1, False, False, 1)
    equal(s.out()[:8], b"\x32\xb1\x02\x00\x01t\x00\x01")
    equal(len(s.out()), 3 + 2 + 1 + 2 + 300)


def test_acks_give_their_packet_id():
    equal(codec.read_ack(FakeSocket(b"\x02\xab\xcd"), 0x40), 0xABCD)
    equal(codec.read_ack(FakeSocket(b"\x03\x00\x07\x01"), 0x90), 7)


def test_a_refused_subscription_is_an_error():
    raises(ValueError, codec.read_ack, FakeSocket(b"\x03\x00\x07\x80"), 0x90, says="bad ack")


def test_other_packets_are_consumed_whole():
    s = FakeSocket(b"\x03xyz" + b"NEXT")
    equal(codec.read_ack(s, 0xB0), 0)  # UNSUBACK-like, not ours: dropped
    equal(s.read(4), b"NEXT")  # the stream stays in step


def test_cut_or_bad_acks_are_errors():
    raises(ValueError, codec.read_ack, FakeSocket(b"\x02\x00"), 0x40, says="short")
    raises(ValueError, codec.read_ack, FakeSocket(b"\x01\x00"), 0x40, says="bad ack")
    raises(ValueError, codec.read_ack, FakeSocket(b"\xff\xff\xff\xff\x7f"), 0x40,
           says="bad length")
    raises(ValueError, codec.read_ack, FakeSocket(b""), 0x40, says="bad length")


def client(incoming):
    got = []
    c = MQTTClient(b"cid", "127.0.0.1")
    c.set_callback(lambda topic, msg, *_: got.append((topic, msg)))
    c.sock = FakeSocket(incoming)  # the seam: umqtt reads and writes only through .sock
    return c, got


def test_umqtt_decodes_a_qos1_delivery_and_acknowledges_it():
    c, got = client(b"\x32\x0a\x00\x03a/b\x00\x2ahey")
    c.check_msg()
    equal(got, [(b"a/b", b"hey")])
    equal(c.sock.out(), b"\x40\x02\x00\x2a")


def test_umqtt_hands_back_a_puback_for_the_codec():
    c, got = client(b"\x40\x02\x00\x09")
    op = c.check_msg()
    equal(op, 0x40)
    equal(codec.read_ack(c.sock, op), 9)
    equal(got, [])


def test_umqtt_check_msg_returns_none_when_nothing_waits():
    c, got = client(b"")
    equal(c.check_msg(), None)
    equal(got, [])


def test_non_ascii_lengths_are_byte_lengths():
    # "β" is 2 bytes and "升级" 6 in UTF-8: MQTT lengths count bytes (micropython-lib #746)
    s = FakeSocket()
    topic = "d/β".encode()
    msg = '{"desc": "升级", "version": "2.0.0-β"}'.encode()
    codec.write_publish(s, head(), topic, msg)
    out = s.out()
    equal(out[1], 2 + len(topic) + len(msg))
    equal(out[2:4], b"\x00\x04")
    equal(out[-len(msg):], msg)
    # umqtt, underneath, reads the same packet back whole: the stream stays in step
    c, got = client(out + b"NEXT")
    c.check_msg()
    equal(got, [(topic, msg)])
    equal(c.sock.read(4), b"NEXT")
