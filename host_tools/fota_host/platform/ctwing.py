"""The CTWing OTA wire vocabulary on the platform's side: the host twin of the device's
firmware/fota/protocol.py (the messages: docs/protocol.md).

- `TopicMap`: the per-device topic prefix (`devices/{device}`) <-> device id and kind.
- `parse_report`: a device's `/ota/inform` or `/ota/progress` message, checked; hostile
  input raises `Dropped` with the reason the platform logs.
- `inform_fields`, `progress_fields`: the checked params of each kind.
- `notice`: the `/ota/upgrade` message for one sub-task.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from .validate import DEVICE_RE, MAX_TEXT, PlatformError

MAX_PAYLOAD = 4096  # bytes; inform and progress messages are a few dozen bytes
KINDS = ("inform", "progress")


class Dropped(ValueError):
    """A device message the platform refuses; the message is the reason it logs."""


class TopicMap:
    """Topic prefix template (`devices/{device}`) <-> device id."""

    def __init__(self, template: str) -> None:
        if template.count("{device}") != 1 or any(c in template for c in "+#"):
            raise PlatformError("topic prefix must contain {device} once and no wildcards")
        self.template = template
        head, tail = template.split("{device}")
        self.regex = re.compile(
            "^" + re.escape(head) + r"([^/]+)" + re.escape(tail) + r"/ota/(inform|progress)$")

    def topic(self, device: str, kind: str) -> str:
        return self.template.replace("{device}", device) + f"/ota/{kind}"

    def subscriptions(self) -> list[str]:
        base = self.template.replace("{device}", "+")
        return [f"{base}/ota/{kind}" for kind in KINDS]

    def parse(self, topic: str) -> tuple[str, str] | None:
        m = self.regex.match(topic)
        return (m.group(1), m.group(2)) if m else None


@dataclass
class Report:
    """One device message: who sent it, which kind, for which sub-task, its params."""

    device: str
    kind: str          # "inform" or "progress"
    task_id: int       # the sub-task id; -1 in an inform without an upgrade in hand
    params: dict[str, Any]


def parse_report(topics: TopicMap, topic: str, payload: bytes) -> Report | None:
    """The message on `topic`; None when the topic is not a device report (our own notices,
    unrelated traffic). Raises `Dropped` for a report the platform must refuse."""
    parsed = topics.parse(topic)
    if parsed is None:
        return None
    device, kind = parsed
    if not DEVICE_RE.match(device):
        raise Dropped("bad device id")
    if len(payload) > MAX_PAYLOAD:
        raise Dropped(f"payload of {len(payload)} bytes")
    try:
        msg = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise Dropped("not JSON") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("params"), dict):
        raise Dropped("not an object with params")
    task_id = msg.get("taskId")
    if not isinstance(task_id, int) or isinstance(task_id, bool):
        raise Dropped("taskId is not an integer")
    if not -1 <= task_id < 2**62:
        raise Dropped("taskId out of range")
    return Report(device, kind, task_id, msg["params"])


def plain_progress(params: dict[str, Any]) -> tuple[int, str] | None:
    """(step, desc) of an ordinary progress report (step 0..100), else None: the fast path
    for the bulk of the traffic; anything else takes `progress_fields`."""
    step = params.get("step")
    desc = params.get("desc", "")
    if type(step) is int and 0 <= step <= 100 and type(desc) is str:
        return step, desc[:MAX_TEXT]
    return None


def progress_fields(params: dict[str, Any]) -> tuple[int, str]:
    """(step, desc) of a progress report: step -100..100 (negative: the device failed)."""
    step = params.get("step")
    desc = params.get("desc", "")
    if not isinstance(step, int) or isinstance(step, bool) or not -100 <= step <= 100:
        raise Dropped("params.step is not an integer in -100..100")
    if not isinstance(desc, str):
        raise Dropped("params.desc is not a string")
    return step, desc[:MAX_TEXT]


def inform_fields(params: dict[str, Any]) -> tuple[str, str]:
    """(version, module) of an inform."""
    version = params.get("version")
    module = params.get("module", "MCU")
    if not isinstance(version, str) or not 0 < len(version) <= 64:
        raise Dropped("params.version is not a string")
    if not isinstance(module, str) or len(module) > 64:
        raise Dropped("params.module is not a string")
    return version, module


def notice(subtask_id: int, file_base: str, package: dict[str, Any], url_task: int,
           token: str) -> bytes:
    """The upgrade notice: the package's size, version, digests and module, the download
    url `<file_base>/<fileId>/<urlTaskId>` and the token. `sha256` only for packages
    signed with it (md5 is always there)."""
    payload: dict[str, Any] = {
        "size": package["size"], "version": package["version"],
        "url": f"{file_base}/{package['file_id']}/{url_task}",
        "md5": package["md5"], "token": token, "module": package["module"],
    }
    if package["sign"] == "sha256":
        payload["sha256"] = package["sha256"]
    return json.dumps({"taskId": subtask_id, "payload": payload}).encode()
