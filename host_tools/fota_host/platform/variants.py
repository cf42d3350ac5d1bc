"""A package's smaller files: its compressed image and its deltas from earlier packages
(the container of images/delta.py, docs/images.md). Each is decoded back to the package's
image (with detools' own applier for a delta) before the platform may serve it.

Which one a device gets is decided per notice (`served`): a delta from the
version the device informed, else the compressed file, else the full image; the full image
only, once the device refused a variant (-3).
"""

from __future__ import annotations

from ..images import delta
from .store import Row, Store
from .validate import PlatformError


def make(kind: str, image: bytes, base: bytes | None, version: str,
         base_version: str | None) -> bytes:
    """The compressed file of `image`, or its delta from `base`; PlatformError when it
    would not save anything or does not decode back to `image`."""
    if delta.is_container(image) or (base is not None and delta.is_container(base)):
        raise PlatformError("compressed and delta files are made from full images only")
    if kind == "delta":
        assert base is not None
        data = delta.delta(base, image)
        what = f"the delta from {base_version} to {version}"
    else:
        data = delta.compress(image)
        what = f"the compressed image of {version}"
    try:
        if delta.decode(data, base) != image:
            raise delta.FormatError("decodes to other bytes")
    except delta.FormatError as exc:
        raise PlatformError(f"{what} does not rebuild the image ({exc}): not stored",
                            500) from None
    if len(data) >= len(image):
        raise PlatformError(f"{what} is {len(data)} bytes, not smaller than the full image "
                            f"({len(image)} bytes): not stored, devices get the full image",
                            422)
    return data


def served(store: Store, sub: Row) -> Row:
    """What a sub-task's notice offers, recorded on it (its kind and file): the package's
    delta from the version the device informed, else its compressed file, else the full
    image; only the full image once the device refused a variant (`full_only`). `sub` is a
    `Store.due_notices` row; the result is that row with the served file's id and digests."""
    variant = None
    if not sub["full_only"]:
        version = store.device_version(sub["device"])
        if version:
            variant = store.variant(sub["file_id"], "delta", version)
        variant = variant or store.variant(sub["file_id"], "compressed")
    store.update_subtask(sub["id"], kind=variant["kind"] if variant else "full",
                         file_id=variant["id"] if variant else None)
    if variant is None:
        return sub
    return {**sub, "file_id": variant["id"], "size": variant["size"], "md5": variant["md5"],
            "sha256": variant["sha256"]}
