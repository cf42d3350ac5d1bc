"""Redirects for fota.http: Location resolution (RFC 9110 §10.2.2, RFC 3986 §5.2) and
the next hop of a chain. Loaded only when a server redirects."""
from micropython import const

_HOPS = const(5)             # redirects followed


def resolve(base, ref, parts):
    """The absolute URL of a redirect's Location `ref` seen from `base` (RFC 9110
    §10.2.2 and RFC 3986 §5.2: absolute, scheme-relative, absolute-path,
    relative-path and query references)."""
    ref = ref.strip()
    c = ref.find("#")
    if c >= 0:
        ref = ref[:c]
    scheme, auth, path = parts(base)
    c = ref.find(":")
    if c > 0 and "/" not in ref[:c] and "?" not in ref[:c]:     # its own scheme
        if ref[c:c + 3] != "://":
            return ref                               # urn:, mailto: ... (refused later)
        scheme, auth, new = parts(ref)
    elif ref[:2] == "//":
        auth, new = parts(scheme + ":" + ref)[1:]
    else:
        c = path.find("?")
        bare = path if c < 0 else path[:c]
        if ref[:1] == "/":
            new = ref
        elif ref[:1] == "?":
            new = bare + ref
        elif ref:                                    # relative path: merge
            new = bare[:bare.rfind("/") + 1] + ref
        else:
            new = path
    if new[:1] != "/":
        new = "/" + new                              # (base or reference without a path)
    # remove_dot_segments (RFC 3986 §5.2.4) on the path, the query kept as it is
    c = new.find("?")
    query = "" if c < 0 else new[c:]
    segs = (new if c < 0 else new[:c]).split("/")
    out = []
    for s in segs[1:]:
        if s == "..":
            if out:
                out.pop()
        elif s != ".":
            out.append(s)
    tail = "/" if segs[-1] in (".", "..") and out else ""
    return "%s://%s/%s%s%s" % (scheme, auth, "/".join(out), tail, query)


def follow(b, parts, where, location, status, hops, downgrade):
    """The next URL of a redirect chain from `where` (Body `b` said so), or why not.
    `parts`: fota.http's URL splitter (passed in: no import circle)."""
    if not location or hops > _HOPS:
        raise b.fail("too many redirects (more than %d)" % _HOPS if location else
                    "HTTP %d without a Location" % status)
    nxt = resolve(where, location, parts)
    if where[:6].lower() == "https:" and nxt[:6].lower() != "https:":
        if not downgrade:
            raise b.fail("https -> http redirect to %s refused (insecure downloads not "
                        "allowed)" % parts(nxt)[1])
        print("fota: WARNING: following an https -> http redirect to", parts(nxt)[1],
              "(insecure downloads allowed)")
    return nxt
