"""The decoders' byte loop: copy inflated bytes, or add them to base bytes (a delta),
and read the patch's region headers between them, as machine code (viper).

The source is compiled when the first decoder opens (`load()`), so this module
itself builds with a plain `mpy-cross` (no -march) and freezes on any port. Where
the port has no native emitter the same source runs as bytecode (much slower,
same bytes). The state (array of int32, slots named in fota.inflate) is: next and
end of the inflated bytes in pb, phase, bytes left in the region, base offset,
base offset of bb[0], image offset of dst[0], image size, base size, bytes made
into dst, end of the deflate stream reached.

Phases: 1 diff region, 2 extra region (all of a compressed image); then the number
being read: 0 the patch's type byte, 3 its image size, 4 its data-format size,
5 a diff size, 6 an extra size, 7 a base adjustment.

run(st, dst, n, pb, bb, fill, rd) makes bytes into dst until n are made (n = -1:
reads what closes a delta instead) and returns 0; it calls fill() when pb is used
up (or holds only part of a number), rd(offset) to read the base into bb from
offset, and hdr() for the numbers between two regions. < 0 for a bad patch: -1 ends
early, -2 a number too long, -3 writes past the image, -4 reads outside the base,
-5 not sequential/uncompressed, -6 another image size, -7 a data format.
"""

# Two sources, compiled one after the other: the compiler's working memory is that of
# the larger alone (a few KiB less at the update's peak than one function). One-space
# indents: the text is held in RAM while it compiles.
_RUN = """
@micropython.viper
def run(st, dst, n: int, pb, bb, fill, rd) -> int:
 s = ptr32(st)
 d = ptr8(dst)
 p = ptr8(pb)
 q = ptr8(bb)
 blen = int(len(bb))
 pi = s[0]
 pn = s[1]
 ph = s[2]
 rem = s[3]
 frm = s[4]
 bat = s[5]
 done = s[9]
 r = 0
 while True:
  if rem == 0 or (ph != 1 and ph != 2):
   if done == n:
    break
   s[0] = pi
   s[2] = ph
   s[3] = rem
   s[4] = frm
   s[9] = done
   r = int(hdr(st, pb, n, fill))
   pi = s[0]
   pn = s[1]
   ph = s[2]
   rem = s[3]
   frm = s[4]
   if r or n < 0:
    break
   continue
  if done == n:
   break
  k = pn - pi
  if k == 0:
   if s[10]:
    r = -1
    break
   s[0] = pi
   fill()
   pi = s[0]
   pn = s[1]
   continue
  if k > rem:
   k = rem
  if k > n - done:
   k = n - done
  i = 0
  if ph == 1:
   o = frm - bat
   if o < 0 or o >= blen:
    bat = frm
    if frm + blen > s[8]:
     bat = s[8] - blen
    rd(bat)
    o = frm - bat
   if k > blen - o:
    k = blen - o
   while i < k:
    d[done + i] = (p[pi + i] + q[o + i]) & 0xFF
    i += 1
   frm += k
  else:
   while i < k:
    d[done + i] = p[pi + i]
    i += 1
  pi += k
  rem -= k
  done += k
 s[0] = pi
 s[2] = ph
 s[3] = rem
 s[4] = frm
 s[5] = bat
 s[9] = done
 return r
"""

_HDR = """
@micropython.viper
def hdr(st, pb, n: int, fill) -> int:
 s = ptr32(st)
 p = ptr8(pb)
 pi = s[0]
 pn = s[1]
 ph = s[2]
 rem = s[3]
 frm = s[4]
 size = s[7] - s[6] - s[9]
 r = 0
 while True:
  if ph == 1 or ph == 2:
   if rem:
    break
   ph += 5
  if n < 0 and ph == 5:
   break
  if pn - pi < 4 and not s[10]:
   s[0] = pi
   fill()
   pi = s[0]
   pn = s[1]
   continue
  if pi >= pn:
   r = -1
   break
  b = p[pi]
  pi += 1
  neg = b & 0x40
  v = b & 0x3F
  sh = 6
  while b & 0x80:
   if sh > 20:
    r = -2
    break
   if pi >= pn:
    r = -1
    break
   b = p[pi]
   pi += 1
   v |= (b & 0x7F) << sh
   sh += 7
  if r:
   break
  if neg:
   v = 0 - v
  if ph == 0:
   if v:
    r = -5
    break
   ph = 3
  elif ph == 3:
   if v != s[7]:
    r = -6
    break
   ph = 4
  elif ph == 4:
   if v:
    r = -7
    break
   ph = 5
  elif ph == 7:
   frm += v
   ph = 5
  else:
   if v < 0 or v > size:
    r = -3
    break
   if ph == 5:
    if v and (frm < 0 or frm + v > s[8]):
     r = -4
     break
    ph = 1
   else:
    ph = 2
   rem = v
 s[0] = pi
 s[2] = ph
 s[3] = rem
 s[4] = frm
 return r
"""


def _same(x):
    return x


def load(native=True):
    """run() as machine code; as bytecode where the port has no emitter (or native=False)."""
    import gc

    g = {}
    for src in (_HDR, _RUN):
        if native:
            try:
                exec(src, g)
                gc.collect()
                continue
            except SyntaxError:  # no native emitter on this port (MemoryError goes through)
                native = False
        g["ptr8"] = g["ptr32"] = _same
        exec(src.replace("@micropython.viper", ""), g)
    return g["run"]
