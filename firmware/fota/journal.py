"""The resume journal: what is being written where, and how much of it is safe.

One small JSON file, replaced atomically (write a temp file, then rename), so a
power cut leaves either the old journal or the new one, never half of one.
"""


def load(path):
    """The journal dict, or None when absent or unreadable (then start over)."""
    import json

    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def save(path, data):
    import json

    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    import os

    os.rename(tmp, path)


def clear(path):
    import os

    for name in (path, path + ".tmp"):
        try:
            os.remove(name)
        except OSError:
            pass
