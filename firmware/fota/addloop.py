"""Byte loops as machine code (viper): the delta applier's (~200x bytecode's speed)
and the inflater's input feed (one call per compressed byte, ~2.5x).

The viper source is compiled on the device at import (`load()`), so this module
itself builds with a plain `mpy-cross` (no -march) and freezes on any port; a
port without the native emitter raises here and inflate.py/patch.py keep their
bytecode loops, which give the same bytes.
"""

_SRC = """
@micropython.viper
def add(dst, at: int, a, b, boff: int, n: int):
    d = ptr8(dst)
    p = ptr8(a)
    q = ptr8(b)
    i = 0
    while i < n:
        d[at + i] = p[i] + q[boff + i]
        i += 1

@micropython.viper
def copy(dst, at: int, src, n: int):
    d = ptr8(dst)
    s = ptr8(src)
    i = 0
    while i < n:
        d[at + i] = s[i]
        i += 1

@micropython.viper
def feed(self, b) -> int:
    st = ptr32(self.st)
    i = st[0]
    if i >= st[1]:
        return int(self.fill(b))
    p = ptr8(self.buf)
    q = ptr8(b)
    q[0] = p[i]
    st[0] = i + 1
    return 1
"""


def load():
    """(add, copy, feed): add(dst, at, a, b, boff, n) sets dst[at+i] = (a[i] + b[boff+i])
    & 0xFF, copy(dst, at, src, n) sets dst[at+i] = src[i], for i < n; feed is
    inflate._Feed's readinto (one byte from its buffer, `fill` when it is used up)."""
    g = {}
    exec(_SRC, g)
    return g["add"], g["copy"], g["feed"]
