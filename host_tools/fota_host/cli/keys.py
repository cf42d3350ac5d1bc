"""`fota keys generate|digest` and `fota sign`: Secure Boot V2 signing keys and signatures
(the format `espsecure sign-data --version 2` writes; see images/signing.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .output import emit_json, fail


@click.group("keys")
def keys_group() -> None:
    """Signing keys (RSA-3072, ESP-IDF Secure Boot V2) and their digests."""


@keys_group.command("generate")
@click.option("--scheme", type=click.Choice(["rsa3072"]), default="rsa3072", show_default=True,
              help="Signature scheme (Secure Boot V2: RSA-3072).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="New private key file (PEM, mode 0600; an existing file is never replaced).")
def keys_generate(scheme: str, output: Path) -> None:
    """A new private signing key; prints its public key's digest (what devices trust)."""
    from ..images import signing

    try:
        signing.generate_key(output, scheme)
    except FileExistsError:
        fail(f"{output} exists: a key is never overwritten (choose another file)")
    except (OSError, signing.SigningError) as exc:
        fail(f"cannot write {output}: {exc}")
    emit_json({"file": str(output), "scheme": scheme, "key_digest": signing.key_digest(output)})


@keys_group.command("digest")
@click.argument("key", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def keys_digest(key: Path) -> None:
    """The digest of a PEM key (private or public): what `--trust` and eFuses take."""
    from ..images import signing

    try:
        digest = signing.key_digest(key)
    except signing.SigningError as exc:
        fail(f"{key}: {exc}")
    emit_json({"file": str(key), "key_digest": digest})


def signature_json(info: Any) -> dict[str, Any]:
    """The JSON form of a `signing.SignatureInfo`."""
    return {"signed": info.signed, "image_size": info.image_size,
            "key_digests": info.key_digests,
            "blocks": [{"index": b.index, "scheme": b.scheme, "key_digest": b.key_digest,
                        "digest_ok": b.digest_ok} for b in info.blocks]}


@click.command("sign")
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              required=True, help="Private key (PEM, RSA-3072).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Signed file (may be IMAGE itself).")
@click.option("--append", is_flag=True,
              help="Add a block to the signature sector IMAGE already has (key rotation).")
def sign_cmd(image: Path, key: Path, output: Path, append: bool) -> None:
    """Sign an ESP32 app image or an app bundle (Secure Boot V2 signature sector)."""
    from ..images import signing, synthetic
    from ..images.facts import image_facts

    try:
        kind = image_facts(image.read_bytes()).format
    except OSError as exc:
        fail(str(exc))
    if kind not in ("esp32", "bundle"):   # what a device verifies (README: Signing)
        what = "an ESP32 app image or an app bundle"
        is_ = f"a {kind} file" if kind != "unknown" else f"not {what}"
        fail(f"cannot sign {image}: it is {is_}; sign {what} (`fota pack` makes them; the "
             "platform compresses and diffs the signed full image itself)")
    try:
        info = signing.sign_file(image, key, output, append=append)
    except signing.SigningError as exc:
        fail(f"cannot sign {image} with {key}: {exc}")
    except OSError as exc:
        fail(str(exc))
    emit_json({"file": str(output), **synthetic.digests(output.read_bytes()),
               **signature_json(info)})


COMMANDS: list[click.Command] = [keys_group, sign_cmd]
