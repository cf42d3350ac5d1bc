"""TLS client contexts that verify the server: for MQTT and for image downloads."""


def context(ca=None, insecure=False):
    """An SSLContext checking the server against `ca` (PEM or DER bytes).

    Without a CA only an explicit `insecure` gives an unverified context;
    otherwise ValueError, so nothing talks TLS to an unknown server by accident.
    """
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=der(ca))
    elif insecure:
        ctx.verify_mode = ssl.CERT_NONE
    else:
        raise ValueError("TLS needs a CA certificate (or allow_insecure)")
    return ctx


def der(cert):
    """DER bytes of a PEM certificate (DER passes through).

    Some MicroPython builds (the unix port's among them) parse only DER in
    load_verify_locations(cadata=...): "invalid cert" for PEM. The first
    certificate of a PEM file is used.
    """
    if not cert.startswith(b"-----BEGIN"):
        return cert
    import binascii

    start = cert.find(b"\n") + 1
    end = cert.find(b"-----END")
    if start <= 0 or end < start:
        raise ValueError("PEM certificate without its END line")
    return binascii.a2b_base64(cert[start:end].replace(b"\n", b"").replace(b"\r", b""))


def read_ca(path):
    """Bytes of a CA certificate file the config names (None for no file)."""
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        raise ValueError("cannot read the CA file " + path)
