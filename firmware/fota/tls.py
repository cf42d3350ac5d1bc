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
        ctx.load_verify_locations(cadata=ca)
    elif insecure:
        ctx.verify_mode = ssl.CERT_NONE
    else:
        raise ValueError("TLS needs a CA certificate (or allow_insecure)")
    return ctx


def read_ca(path):
    """Bytes of a CA certificate file the config names (None for no file)."""
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        raise ValueError("cannot read the CA file " + path)
