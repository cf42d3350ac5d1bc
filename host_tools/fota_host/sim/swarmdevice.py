"""One device of `fota sim swarm`: the agent's side of the CTWing protocol
(firmware/fota/agent.py, protocol.py) on asyncio, in CPython, a few KiB per device.

What it does, as the agent does it (docs/protocol.md):
- connects with a clean session, client id = device id, subscribes to
  `<prefix>/ota/upgrade` at QoS 1 and informs `{"taskId": -1|T, "params": {"version",
  "module"}}` at QoS 1 on every connect (T once, after the "reboot" that ends task T);
- validates each notice like `protocol.parse_notice` (a bad one is dropped), ignores another
  module's, answers a notice for the version it runs with an inform of that taskId, refuses
  another task while it works with step -1 "busy";
- downloads from the guide's address (`<base>?fileId=&taskId=&deviceId=&accessToken=`),
  resuming a download that failed earlier with `Range: bytes=N-` (a 200 answer starts over),
  checks the size, MD5 and (when the notice has it) SHA-256;
- reports progress 1..99 at QoS 0 every `progress_step` percent or `progress_interval`
  seconds, then 100 "written and verified, rebooting" at QoS 1, or a failure at QoS 1
  (-2 download failed, -3 verification failed), then "reboots": disconnects, waits
  `reboot_delay` and connects again, informing the new version with the task's id.

The device keeps only digest states and counters, never the image bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import aiohttp
import aiomqtt
from yarl import URL

if TYPE_CHECKING:
    from .swarmshared import Shared

_HEX32 = re.compile(r"[0-9a-fA-F]{32}")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
CHUNK = 16384


def parse_notice(raw: bytes) -> tuple[int, dict[str, Any]]:
    """(taskId, payload) of an /ota/upgrade message, checked as the device checks it
    (firmware/fota/protocol.py parse_notice); ValueError says what is wrong."""
    try:
        msg = json.loads(raw)
    except (ValueError, UnicodeError):
        raise ValueError("not JSON") from None
    if not isinstance(msg, dict):
        raise ValueError("not an object")
    task, p = msg.get("taskId"), msg.get("payload")
    if type(task) is not int:
        raise ValueError("taskId is not an int")
    if not isinstance(p, dict):
        raise ValueError("payload is not an object")
    if type(p.get("size")) is not int or p["size"] <= 0:
        raise ValueError("size is not a positive int")
    for key in ("version", "url", "token", "module"):
        if not isinstance(p.get(key), str):
            raise ValueError(key + " is not a string")
    if not p["url"].startswith(("http://", "https://")):
        raise ValueError("url is not http(s)")
    if not isinstance(p.get("md5"), str) or not _HEX32.fullmatch(p["md5"]):
        raise ValueError("md5 is not 32 hex digits")
    sha = p.get("sha256")
    if sha is not None and (not isinstance(sha, str) or not _HEX64.fullmatch(sha)):
        raise ValueError("sha256 is not 64 hex digits")
    return task, p


def download_url(url: str, device_id: str, token: str) -> str:
    """The guide's download address: `.../<fileId>/<urlTaskId>` ->
    `...?fileId=&taskId=&deviceId=&accessToken=`, values percent-encoded (RFC 3986)."""
    url = url.split("?", 1)[0]
    parts = url.rstrip("/").rsplit("/", 2)
    if len(parts) != 3 or not parts[1] or not parts[2] or parts[0].endswith(":/"):
        raise ValueError("url has no /<fileId>/<taskId> at its end")
    q = [("fileId", parts[1]), ("taskId", parts[2]), ("deviceId", device_id),
         ("accessToken", token)]
    return parts[0] + "?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in q)


def message(task: int, **params: Any) -> bytes:
    """An inform or a progress report: {"taskId": task, "params": params}."""
    return json.dumps({"taskId": task, "params": params}).encode()


class Partial:
    """A download in progress: its digests and how far it got (kept across attempts)."""

    __slots__ = ("key", "offset", "md5", "sha")

    def __init__(self, key: tuple[str, int, str | None]) -> None:
        self.key = key
        self.restart()

    def restart(self) -> None:
        self.offset = 0
        self.md5 = hashlib.md5()
        self.sha = hashlib.sha256() if self.key[2] else None


class Failed(Exception):
    """An update attempt that failed: `step` (-2, -3) and the reason reported."""

    def __init__(self, step: int, reason: str) -> None:
        super().__init__(reason)
        self.step = step
        self.reason = reason


class SwarmDevice:
    """One simulated device; `run()` is its whole life (cancel it to stop)."""

    __slots__ = ("shared", "id", "t_inform", "t_progress", "t_upgrade", "version",
                 "start_version", "fail", "slow", "client", "inform_task", "task", "taken",
                 "partial", "reports", "reboot", "wake", "state", "upgraded_at", "online",
                 "delivering", "met", "broken")

    def __init__(self, shared: Shared, device_id: str, fail: bool, slow: bool) -> None:
        self.shared = shared
        self.id = device_id
        base = shared.opts.topic_prefix.replace("{device}", device_id).rstrip("/") + "/ota/"
        self.t_inform, self.t_progress, self.t_upgrade = (
            base + "inform", base + "progress", base + "upgrade")
        self.version = self.start_version = shared.opts.version
        self.fail, self.slow = fail, slow
        self.client: aiomqtt.Client | None = None
        self.inform_task = -1           # the taskId of the next inform
        self.task: int | None = None    # the task being worked on
        self.taken: set[int] = set()    # tasks taken and not failed
        self.partial: Partial | None = None
        self.reports: list[tuple[int, int, str]] = []   # QoS 1 reports still to deliver
        self.reboot: tuple[int, str] | None = None      # (task, version) once step 100 is out
        self.wake = asyncio.Event()
        self.state = "idle"             # idle, updating, upgraded, failed
        self.upgraded_at: float | None = None
        self.online = False             # an inform is due (set on every connect)
        self.delivering = False
        self.met = False                # informed once (the platform has met it)
        self.broken = False             # the link lost a QoS 1 message: reconnect

    @property
    def settled(self) -> bool:
        """Upgraded, or failed with nothing in hand: it waits for nothing more."""
        return self.state == "upgraded" or (self.state == "failed" and self.task is None)

    # == the link ======================================================================
    async def run(self) -> None:
        backoff = 0.5
        while True:
            await self.shared.connect_slot()
            handshake = self.shared.handshakes     # connects under way, bounded
            await handshake.acquire()
            held = True
            try:
                async with self.shared.new_client(self.id) as client:
                    backoff = 0.5
                    await client.subscribe(self.t_upgrade, qos=1)
                    self.wake.clear()
                    reader = asyncio.ensure_future(self._read(client))
                    reader.add_done_callback(lambda _f: self.wake.set())
                    self.client, self.online, self.broken = client, True, False
                    try:
                        await self._deliver()
                        handshake.release()
                        held = False
                        while self.reboot is None or self.reports:
                            await self.wake.wait()
                            self.wake.clear()
                            if self.broken:     # a QoS 1 publish not acknowledged
                                raise aiomqtt.MqttError("no PUBACK in time")
                            if reader.done():
                                reader.result()     # the link broke: MqttError
                                break
                    finally:
                        self.client = None
                        reader.cancel()
            except aiomqtt.MqttError:
                self.client = None
                self.shared.stats["link_errors"] += 1
                await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
                backoff = min(backoff * 2, 30.0)
                continue
            finally:
                if held:
                    handshake.release()
            if self.reboot is not None and not self.reports:    # disconnected: "reboot"
                task, version = self.reboot
                self.reboot = None
                self.version, self.inform_task = version, task
                await asyncio.sleep(self.shared.opts.reboot_delay)

    async def _read(self, client: aiomqtt.Client) -> None:
        async for m in client.messages:
            raw = m.payload if isinstance(m.payload, bytes) else str(m.payload).encode()
            await self._on_notice(raw)

    async def _publish(self, topic: str, payload: bytes, qos: int) -> bool:
        client = self.client
        if client is None:
            return False
        try:
            await client.publish(topic, payload, qos=qos)
        except aiomqtt.MqttError:
            if qos and client is self.client:
                # like the agent's link: an unacknowledged QoS 1 message means the link
                # is down; it reconnects, and informs again
                self.broken = True
                self.wake.set()
            return False
        if topic == self.t_progress:
            self.shared.stats["progress_sent"] += 1     # QoS 0 and 1, once each when out
        return True

    async def _deliver(self) -> None:
        """Reports first (QoS 1, in order), then the inform due on connect; once step 100
        is out, wake the link loop to reboot. One delivery at a time."""
        if self.delivering:
            return
        self.delivering = True
        module = self.shared.opts.module
        try:
            while True:
                if self.reports:
                    task, step, desc = self.reports[0]
                    if not await self._publish(self.t_progress, message(
                            task, step=step, desc=desc, module=module), 1):
                        return
                    self.reports.pop(0)
                elif self.reboot is not None:
                    self.wake.set()
                    return
                elif self.online:
                    task = self.inform_task
                    if not await self._publish(self.t_inform, message(
                            task, version=self.version, module=module), 1):
                        return
                    if not self.met:
                        self.met = True
                        self.shared.stats["first_informs"] += 1
                    self.online, self.inform_task = False, -1
                    self._informed()
                else:
                    return
        finally:
            self.delivering = False

    def _informed(self) -> None:
        target = self.shared.opts.until_version
        done = (self.version == target if target is not None
                else self.version != self.start_version)
        if done and self.state != "upgraded":
            self.state = "upgraded"
            self.upgraded_at = time.monotonic()
            self.shared.stats["upgraded_informs"] += 1

    # == notices =======================================================================
    async def _on_notice(self, raw: bytes) -> None:
        stats = self.shared.stats
        try:
            task, p = parse_notice(raw)
        except ValueError:
            stats["bad_notices"] += 1
            return
        if p["module"] != self.shared.opts.module:
            return
        stats["notices"] += 1
        if task in self.taken or self.state == "upgraded" and p["version"] == self.version:
            stats["duplicate_notices"] += 1     # taken already, or runs it already
        if self.reboot is not None:
            return          # rebooting: a notice now is lost with the RAM
        if self.task is not None:
            if task != self.task:
                stats["busy_refusals"] += 1
                await self._publish(self.t_progress, message(
                    task, step=-1, desc="busy", module=self.shared.opts.module), 1)
            return          # the same task: QoS 1 may deliver a notice twice
        if p["version"] == self.version:    # nothing to download: say so
            if await self._publish(self.t_inform, message(
                    task, version=self.version, module=self.shared.opts.module), 1):
                self._informed()
            return
        self.task = task
        self.taken.add(task)
        self.state = "updating"
        self.shared.spawn(self._update(task, p))

    async def _update(self, task: int, p: dict[str, Any]) -> None:
        try:
            await self._download(task, p)
            self.reports.append((task, 100, "written and verified, rebooting"))
            self.reboot = (task, p["version"])
        except Failed as exc:
            self._failed(task, exc.step, exc.reason)
        except Exception as exc:  # noqa: BLE001 - like the agent: a bug is a -1 report
            self._failed(task, -1, f"internal error: {exc!r}")
        self.task = None
        await self._deliver()

    def _failed(self, task: int, step: int, reason: str) -> None:
        self.taken.discard(task)
        self.state = "failed"
        self.shared.stats["failures"] += 1
        self.reports.append((task, step, reason))

    # == the download ==================================================================
    async def _download(self, task: int, p: dict[str, Any]) -> None:
        opts, stats = self.shared.opts, self.shared.stats
        if opts.start_delay:
            await asyncio.sleep(random.random() * opts.start_delay)
        try:
            url = download_url(p["url"], self.id, p["token"])
        except ValueError as exc:
            raise Failed(-2, f"bad url: {exc}") from None
        size, host = p["size"], urlsplit(url).netloc
        sha = p.get("sha256")
        key = (p["md5"].lower(), size, sha.lower() if sha else None)
        part = self.partial if self.partial is not None and self.partial.key == key else None
        if part is None:
            part = self.partial = Partial(key)
        stats["downloads"] += 1
        try:
            await self._fetch(url, part, task, size)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            cause = str(exc) or type(exc).__name__
            raise Failed(-2, f"download failed: host {host}: {cause} (at byte "
                         f"{part.offset})") from None
        self.partial = None
        if part.md5.hexdigest() != key[0]:
            raise Failed(-3, "md5 mismatch")
        if part.sha is not None and part.sha.hexdigest() != key[2]:
            raise Failed(-3, "sha256 mismatch")

    async def _fetch(self, url: str, part: Partial, task: int, size: int) -> None:
        host = urlsplit(url).netloc
        address = URL(url, encoded=True)    # sent as built: %2F stays %2F
        for _ in range(2):       # a second GET only when the server won't resume
            headers = {"Range": f"bytes={part.offset}-"} if part.offset else {}
            async with self.shared.session.get(address, headers=headers) as resp:
                status = resp.status
                if status == 206 and part.offset:
                    m = _RANGE.fullmatch(resp.headers.get("Content-Range", ""))
                    if m and int(m.group(1)) == part.offset and m.group(3) in ("*", str(size)):
                        self.shared.stats["resumed"] += 1
                        await self._body(resp, part, task, size)
                        return
                elif status == 200:
                    if resp.content_length is not None and resp.content_length != size:
                        raise Failed(-3, f"download failed: host {host}: server sends "
                                     f"{resp.content_length} bytes, the notice says {size}")
                    part.restart()
                    await self._body(resp, part, task, size)
                    return
                if not (part.offset and status in (206, 416)):
                    raise Failed(-2, f"download failed: host {host}: HTTP {status}")
            part.restart()      # the server would not resume here: from the top
        raise Failed(-2, f"download failed: host {host}: the server would not resume")

    async def _body(self, resp: aiohttp.ClientResponse, part: Partial, task: int,
                    size: int) -> None:
        opts, stats = self.shared.opts, self.shared.stats
        module = opts.module
        sent, sent_at = 0, time.monotonic()
        started, got = time.monotonic(), 0
        chunk = 4096 if self.slow else CHUNK
        while part.offset < size:
            data = await resp.content.read(min(chunk, size - part.offset))
            if not data:
                raise Failed(-2, f"download failed: host {urlsplit(str(resp.url)).netloc}: "
                             f"ended early at byte {part.offset}")
            if self.fail and part.offset == 0:
                data = bytes([data[0] ^ 0xFF]) + data[1:]   # a corrupted transfer: -3
            part.md5.update(data)
            if part.sha is not None:
                part.sha.update(data)
            part.offset += len(data)
            got += len(data)
            stats["bytes"] += len(data)
            pct = min(max(part.offset * 100 // size, 1), 99)
            now = time.monotonic()
            if pct != sent and (pct - sent >= opts.progress_step
                                or now - sent_at >= opts.progress_interval):
                sent, sent_at = pct, now
                await self._publish(self.t_progress, message(
                    task, step=pct, desc="downloading", module=module), 0)
            if self.slow:
                lag = got / opts.slow_bps - (now - started)
                if lag > 0:
                    await asyncio.sleep(lag)
