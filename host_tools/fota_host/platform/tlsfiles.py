"""The platform's TLS server certificate and key, checked before anything starts.

`fota platform serve --tls-cert FILE --tls-key FILE` loads them here first, so a wrong
file is one error naming both files, before the broker starts or the data folder is made.
"""

from __future__ import annotations

import ssl

from .validate import PlatformError


def _no_passphrase() -> bytes:
    # Called by OpenSSL for an encrypted key. Without it, OpenSSL would prompt on the
    # terminal and a service started by a supervisor would wait for ever.
    raise PlatformError("the key is encrypted: give an unencrypted key "
                        "(openssl pkey -in KEY -out KEY.plain)")


def server_context(cert: str, key: str) -> ssl.SSLContext:
    """A server-side SSLContext for the HTTPS listener (cert: PEM chain, key: PEM key).

    Raises PlatformError naming both files when either is unreadable, not PEM, encrypted,
    or when the key does not belong to the certificate.
    """
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(cert, key, password=_no_passphrase)
    except PlatformError as exc:
        raise PlatformError(f"--tls-key {key}: {exc}") from None
    except ssl.SSLError as exc:
        why = exc.reason or str(exc)
        hint = ("the key does not belong to the certificate" if "MISMATCH" in str(why)
                else "expected a PEM certificate chain and its PEM private key")
        raise PlatformError(f"--tls-cert {cert} / --tls-key {key}: {hint} ({why})") from None
    except OSError as exc:
        raise PlatformError(f"--tls-cert {cert} / --tls-key {key}: {exc.strerror or exc}") from None
    return ctx
