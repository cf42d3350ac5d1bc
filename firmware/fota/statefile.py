"""Small JSON state files that survive power cuts (trial records, the slot pointer).

`save` replaces a document atomically (temp file + rename), so a cut leaves the old
version or the new one, never half of one.
"""


def load(path):
    """The document, or None when absent or unreadable (then start over)."""
    import json

    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def save(path, data):
    import json
    import os

    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.rename(tmp, path)


def clear(path):
    import os

    for name in (path, path + ".tmp"):
        try:
            os.remove(name)
        except OSError:
            pass
