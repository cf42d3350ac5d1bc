"""Small JSON state files that survive power cuts (trial records, the slot pointer).

`save` replaces a document atomically (temp file + rename), so a cut leaves the old
version or the new one, never half of one; it also starts the document with a CRC-32
of the rest (`{"crc": "1a2b3c4d", ...}`), so flash damage is told apart from "no
state" (`check`). A document without the crc (an older firmware's, or one a host
tool wrote) is taken as it is.
"""
from micropython import const

_HEAD = const(20)   # len('{"crc": "01234567", ')


def check(path):
    """(document, None) for a good file, (None, None) when there is none, and
    (what could be read or None, why) for a damaged one: treat that as unknown
    state, never as "no state"."""
    import json

    try:
        f = open(path)
    except OSError:
        return None, None
    text = ""
    try:
        with f:
            text = f.read()
        data = json.loads(text)
    except (OSError, ValueError, UnicodeError):
        return None, "unreadable" if text else "empty"
    if not isinstance(data, dict):
        return None, "not a JSON object"
    crc = data.pop("crc", None)
    if crc is None:
        return data, None
    import binascii

    body = "{" + text[_HEAD:] if text[_HEAD - 2:_HEAD] == ", " else "{}"
    if not text.startswith('{"crc": "') or "%08x" % binascii.crc32(body.encode()) != crc:
        return data, "checksum mismatch"
    return data, None


def load(path):
    """The document, or None when absent or damaged (`check` tells which)."""
    data, why = check(path)
    return None if why else data


def save(path, data):
    import binascii
    import json
    import os

    data.pop("crc", None)
    text = json.dumps(data)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write('{"crc": "%08x"' % binascii.crc32(text.encode()))
        f.write(", " + text[1:] if len(text) > 2 else "}")
    os.rename(tmp, path)


def clear(path):
    import os

    for name in (path, path + ".tmp"):
        try:
            os.remove(name)
        except OSError:
            pass
