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
    """Each certificate of a PEM file (the one of a DER file), as DER bytes; a
    generator, so a large bundle is converted one certificate at a time.

    Some MicroPython builds (the unix port's among them) parse only DER in
    load_verify_locations(cadata=...): "invalid cert" for PEM. Text between the
    PEM blocks (comments) and blocks other than CERTIFICATE are skipped.
    """
    if data[:1] == b"\x30" and b"-----BEGIN" not in data:
        yield data
        return
    import binascii

    i = data.find(b"-----BEGIN CERTIFICATE-----")
    if i < 0:
        raise ValueError("no certificate in the CA file (PEM or DER expected)")
    while i >= 0:
        end = data.find(b"-----END", i)
        if end < 0:
            raise ValueError("PEM certificate without its END line")
        yield binascii.a2b_base64(data[i + 27:end])     # (line ends are skipped)
        i = data.find(b"-----BEGIN CERTIFICATE-----", end)


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
