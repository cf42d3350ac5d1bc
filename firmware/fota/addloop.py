"""The delta applier's byte loops as machine code (viper): ~200x bytecode's speed.

The viper source is compiled on the device at import (`load()`), so this module
itself builds with a plain `mpy-cross` (no -march) and freezes on any port; a
port without the native emitter raises here and patch.py keeps its bytecode
loops, which give the same bytes.
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
"""


def load():
    """(add, copy): add(dst, at, a, b, boff, n) sets dst[at+i] = (a[i] + b[boff+i]) & 0xFF,
    copy(dst, at, src, n) sets dst[at+i] = src[i], for i < n."""
    g = {}
    exec(_SRC, g)
    return g["add"], g["copy"]
