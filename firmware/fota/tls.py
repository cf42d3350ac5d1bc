"""TLS client contexts that verify the server: for MQTT and for image downloads."""

_warned = []        # what an insecure-option warning was already printed for


def context(ca=None, insecure=False, what="TLS"):
    """An SSLContext checking the server against `ca`: PEM or DER bytes, one
    certificate or a bundle of them (every certificate is loaded).

    Without a CA only an explicit `insecure` gives an unverified context (and a
    warning line, once per `what`); otherwise ValueError, so nothing talks TLS to
    an unknown server by accident.
    """
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca:
        ctx.verify_mode = ssl.CERT_REQUIRED
        good = bad = 0
        # MicroPython's load_verify_locations(cadata=) adds the certificates it is
        # given to those loaded before, but takes only the first of concatenated
        # DER (and no PEM at all on the unix port): one call per certificate.
        for cert in certs(ca):
            try:
                ctx.load_verify_locations(cadata=cert)
                good += 1
            except ValueError:
                bad += 1            # one certificate mbedTLS can't use: skip it
        if not good:
            raise ValueError("no usable certificate in the CA file (%d rejected)" % bad)
    elif insecure:
        ctx.verify_mode = ssl.CERT_NONE
        if what not in _warned:
            _warned.append(what)
            print("fota: WARNING: %s: the server's certificate is NOT verified "
                  "(insecure option set, no CA)" % what)
    else:
        raise ValueError("TLS needs a CA certificate (or allow_insecure)")
    return ctx


def certs(data):
    """Each certificate of a PEM or DER file, as DER bytes (a generator: a large
    bundle is converted one certificate at a time).

    Some MicroPython builds (the unix port's among them) parse only DER in
    load_verify_locations(cadata=...): "invalid cert" for PEM. PEM blocks other
    than CERTIFICATE (keys, comments between blocks) are skipped.
    """
    if b"-----BEGIN" in data or data[:1] != b"\x30":
        import binascii

        begin = b"-----BEGIN CERTIFICATE-----"
        found = 0
        i = data.find(begin)
        while i >= 0:
            start = i + len(begin)
            end = data.find(b"-----END", start)
            if end < 0:
                raise ValueError("PEM certificate without its END line")
            body = data[start:end].replace(b"\n", b"").replace(b"\r", b"").replace(b" ", b"")
            try:
                yield binascii.a2b_base64(body)
            except ValueError:
                raise ValueError("bad base64 in a PEM certificate")
            found += 1
            i = data.find(begin, end)
        if not found:
            raise ValueError("no certificate in the CA file (PEM or DER expected)")
        return
    # DER: certificates one after another, each an ASN.1 SEQUENCE.
    i = 0
    n = len(data)
    while i < n:
        if data[i] != 0x30 or i + 2 > n:
            raise ValueError("bad DER certificate at byte %d" % i)
        size = data[i + 1]
        head = 2
        if size & 0x80:
            k = size & 0x7F
            if not 0 < k < 4 or i + 2 + k > n:
                raise ValueError("bad DER certificate at byte %d" % i)
            size = 0
            for j in range(k):
                size = size << 8 | data[i + 2 + j]
            head += k
        if i + head + size > n:
            raise ValueError("truncated DER certificate at byte %d" % i)
        yield data[i:i + head + size]
        i += head + size


def der(cert):
    """DER bytes of the first certificate of a PEM or DER file."""
    for one in certs(cert):
        return one
    raise ValueError("no certificate in the CA file")


def failure(exc):
    """A failed TLS handshake in words. mbedTLS (MicroPython's ssl) raises
    ValueError with its verify report when the server's certificate is refused,
    OSError for everything else (alerts, a peer that doesn't speak TLS)."""
    if isinstance(exc, ValueError):
        why = "; ".join([x.strip() for x in str(exc).split("\n") if x.strip()])
        return "TLS handshake failed: certificate could not be verified" + (
            " (%s)" % why if why else "")
    return "TLS handshake failed: %s" % (exc,)


def read_ca(path):
    """Bytes of a CA certificate file the config names (None for no file)."""
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        raise ValueError("cannot read the CA file " + path)
