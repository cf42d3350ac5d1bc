"""CTWing MQTT FOTA messages: reports, notice validation, download address.

Shapes follow ../shared/spec/ctwing-mqtt-ota.md exactly:
    inform   {"taskId": -1, "params": {"version": V, "module": M}}
    upgrade  {"taskId": T, "payload": {"size", "version", "url", "md5", "token", "module"}}
    progress {"taskId": T, "params": {"step": S, "desc": D, "module": M}}
"""


def message(task, params):
    """An inform or a progress report: {"taskId": task, "params": params}."""
    import json

    return json.dumps({"taskId": task, "params": params})


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _hex(s, n):
    if not isinstance(s, str) or len(s) != n:
        return False
    for c in s:
        if c not in "0123456789abcdefABCDEF":
            return False
    return True


def parse_notice(raw):
    """(taskId, payload dict) from an /ota/upgrade message; ValueError says what is wrong."""
    import json

    try:
        msg = json.loads(raw)
    except (ValueError, UnicodeError):
        raise ValueError("not JSON")
    if not isinstance(msg, dict):
        raise ValueError("not an object")
    task = msg.get("taskId")
    p = msg.get("payload")
    if not _is_int(task):
        raise ValueError("taskId is not an int")
    if not isinstance(p, dict):
        raise ValueError("payload is not an object")
    size = p.get("size")
    if not _is_int(size) or size <= 0:
        raise ValueError("size is not a positive int")
    for key in ("version", "url", "token", "module"):
        if not isinstance(p.get(key), str):
            raise ValueError(key + " is not a string")
    url = p["url"]
    if not (url.startswith("http://") or url.startswith("https://")):
        raise ValueError("url is not http(s)")
    if not _hex(p.get("md5"), 32):
        raise ValueError("md5 is not 32 hex digits")
    sha = p.get("sha256")
    if sha is not None and not _hex(sha, 64):  # else the whole image is fetched to fail
        raise ValueError("sha256 is not 64 hex digits")
    return task, p


def url_task(url):
    """The platform's task id in a notice url (.../file/upgrade/<fileId>/<urlTaskId>),
    as text; "?" when the url has none. Devices log it beside the notice's taskId
    (the sub-task), so a log line can be matched with `fota task show`."""
    query = url.find("?")
    if query >= 0:
        url = url[:query]
    at = url.find("://")
    path = url[at + 3:] if at >= 0 else url
    parts = path.rstrip("/").split("/")
    return parts[-1] if len(parts) >= 3 and parts[-1] and parts[-2] else "?"


def describe(step, reason, lang="en"):
    """A progress desc: the reason, after CTWing-style Chinese for steps -1..-4 when
    `lang` is "zh" (the platform's guide shows Chinese descs; the English reason stays)."""
    if lang != "zh" or not -4 <= step <= -1:
        return reason
    # upgrade failed, download failed, verification failed, write failed
    zh = ("固件升级失败", "固件下载失败", "固件校验失败", "固件写入失败")
    return zh[-step - 1] + ": " + reason


def quote(s):
    """Percent-encode everything but unreserved characters (RFC 3986)."""
    out = []
    for b in s.encode():
        c = chr(b)
        if (c.isalpha() and b < 128) or c.isdigit() or c in "-._~":
            out.append(c)
        else:
            out.append("%%%02X" % b)
    return "".join(out)


def download_url(url, device_id, token):
    """The address the spec's "Building the download address" describes.

    .../file/upgrade/<fileId>/<urlTaskId> ->
    .../file/upgrade?fileId=<fileId>&taskId=<urlTaskId>&deviceId=<id>&accessToken=<token>
    """
    query = url.find("?")
    if query >= 0:
        url = url[:query]
    parts = url.rstrip("/").rsplit("/", 2)
    if len(parts) != 3 or not parts[1] or not parts[2] or parts[0].endswith(":/"):
        raise ValueError("url has no /<fileId>/<taskId> at its end")
    return "%s?fileId=%s&taskId=%s&deviceId=%s&accessToken=%s" % (
        parts[0], quote(parts[1]), quote(parts[2]), quote(device_id), quote(token))
