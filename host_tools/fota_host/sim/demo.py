"""`make demo`: the whole upgrade loop on one machine, no root, no system broker, shown as a
tour a person can repeat by hand.

The platform with its embedded broker and web console (its address and where the admin
token is are printed first), a signing key, synthetic images 1.0.1 and 2.0.0 (2.0.0
signed, ESP32 app image and Pico W bundle), a mixed fleet of simulated ESP32 and Pico W
boards trusting the key (the ESP32 boards run the 1.0.1 image, one of them still 1.0.0),
then what a user does with the `fota` commands: package create (1.0.1 too, the delta's
base), package add-delta, task create with two waves (`--wave 1 --wave rest`, when a
board kind has two boards or more), task add-devices, task start (one package and task
per board kind). Every command is printed as it could be typed (in the work folder,
lines broken with ` \\` to fit 80 columns); live progress per device, a summary table
(wave, kind full/delta, bytes downloaded per device, bytes saved against full images for
all), a clean shutdown, and as the very last line one JSON object:
    {"devices": N, "succeeded": N, "failed": 0, "seconds": T, "bytes_saved": B, "waves": W}
Exit status 1 if any device did not end on 2.0.0 with its sub-task succeeded; 130 when
interrupted (Ctrl-C or SIGTERM: one line says what was cleaned up, no JSON line).

    python -m fota_host.sim.demo [--devices 6] [--size N] [--timeout 60] [--keep [DIR]]
                                 [--slow | --pace SECONDS]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from ..platform.process import start_platform
from . import flash as simflash
from .faults import LinkFaults
from .fleet import Fleet, HttpProxy
from .tour import Tour, summary, watch

OLD, NEW = "1.0.1", "2.0.0"
ELDER = "1.0.0"         # one ESP32 board still runs it: no delta from there, the full image
HEAP = "160K"           # RSA-3072 and the delta decoder (make bench: agent heap figures)
BOARDS = ("esp32", "pico_w")
PICO_MAX = 320 * 1024   # a Pico W slot holds 384 KiB
HEALTH_DEADLINE = 15
DEVICE_CONFIG = {"progress_interval_s": 0.5, "broker": {"keepalive": 10}}
SLOW_PACE, SLOW_RATE = 2.0, 100_000     # --slow: seconds per step, bytes/s per download


class Interrupted(Exception):
    """Ctrl-C or SIGTERM: stop, clean up, say so in one line."""


def payloads(images: Path, size: int) -> tuple[str, str]:
    """The application's bytes for OLD and NEW (random, like compiled code: they do not
    compress); NEW changes three 2 KiB pieces of OLD, as a small release does."""
    rnd = random.Random(2026)
    old = bytearray(rnd.randbytes(max(0, size - 1024)))
    new = bytearray(old)
    for at in (len(new) // 5, len(new) // 2, len(new) * 4 // 5):
        new[at:at + 2048] = rnd.randbytes(len(new[at:at + 2048]))
    names = (f"images/app-{OLD}.bin", f"images/app-{NEW}.bin")
    for name, data in zip(names, (old, new), strict=True):
        (images.parent / name).write_bytes(bytes(data))
    return names


def install(flash: Path, image: bytes) -> bool:
    """Put an ESP32 image in a simulated board's first slot (its factory image), if it fits."""
    slot = flash / "ota_0"
    if len(image) > slot.stat().st_size:
        return False
    slot.write_bytes(image.ljust(slot.stat().st_size, b"\xff"))
    return True


def run(devices: int, size: int, timeout: float, work: Path, console: Console,
        pace: float = 0.0, rate: float | None = None,
        cleaned: list[str] | None = None) -> dict[str, Any]:
    cleaned = cleaned if cleaned is not None else []
    tour = Tour(console, work, pace)
    images = work / "images"
    images.mkdir(parents=True, exist_ok=True)
    console.rule("[bold]MicroPython FOTA over MQTT: demo")
    tour.say(f"Every command below runs in {work}: `cd` there to repeat them by hand")
    tour.say("(with .venv/bin on your PATH: `source .venv/bin/activate`).")
    tour.step("Start the platform: packages, tasks, an embedded MQTT broker, file server, "
              "web console.")
    proxy_port = None
    slow_proxy = None
    if rate:
        from ..sim.faults import FaultProxy

        # The slow download path listens before the platform starts (its port goes into
        # --public-url) and stays open: the fleet points it at the file server. Picking a
        # free port and binding it later raced (#13: "Address already in use").
        slow_proxy = FaultProxy(1)
        proxy_port = slow_proxy.port
    try:
        platform = start_platform(work / "platform", push_rate=6000, device_timeout=60,
                                  **({"public_url": f"http://127.0.0.1:{proxy_port}"}
                                     if proxy_port else {}))
    except BaseException:
        if slow_proxy is not None:
            slow_proxy.close()
        raise
    cleaned.append("the platform")
    fleet = None
    rows: list[dict[str, Any]] = []
    waves = 1
    try:
        tour.show("platform", "serve", "--data", "platform", "--http-port", "0",
                  "--mqtt-port", "0", "--push-rate", "6000")
        tour.say("(the demo starts it from Python with these options: start_platform())")
        tour.say(f"admin API {platform.api}, broker {platform.broker}")
        tour.say(f"web console {platform.api}/console")
        tour.say("  sign in with the admin token in platform/admin.token")
        tour.step("Make a signing key: devices trust its digest, images carry its signature.")
        key = tour.fota("keys", "generate", "-o", "release.pem")
        digest = key["key_digest"]
        tour.say(f"-> key digest {digest[:16]}...")
        tour.step(f"Build images {OLD} and {NEW} (synthetic, valid) and sign {NEW}.")
        app_old, app_new = payloads(images, size)
        tour.say(f"(the application's bytes: {app_old}; {NEW} changes 6 KiB of them)")
        files: dict[tuple[str, str], str] = {}
        n = size
        for version, app in ((OLD, app_old), (NEW, app_new)):
            out = f"images/esp32-{version}.bin"
            tour.fota("pack", "sim-image", "--board", "esp32", "--version", version,
                      "--size", str(n), "--payload", app,
                      *(("--secure-version", "1") if version == NEW else ()), "-o", out)
            files["esp32", version] = out
        out = f"images/pico_w-{NEW}.bin"
        tour.fota("pack", "sim-image", "--board", "pico_w", "--version", NEW, "--size",
                  str(min(size, PICO_MAX)), "--secure-version", "1", "-o", out)
        files["pico_w", NEW] = out
        for board in BOARDS:
            signed = f"images/{board}-{NEW}.signed.bin"
            tour.fota("sign", files[board, NEW], "--key", "release.pem", "-o", signed)
            files[board, NEW] = signed
        tour.say("(a Pico W app bundle carries the same Secure Boot V2 signature sector)")
        tour.step(f"Start {devices} simulated boards on {OLD}, trusting the key: the real "
                  "device code on the MicroPython unix port.")
        config = {**DEVICE_CONFIG, "health_deadline_s": HEALTH_DEADLINE,
                  "trusted_keys": [digest]}
        tour.show("sim", "fleet", "--count", str(devices), "--broker", platform.broker,
                  "--data", "fleet", "--version", OLD, "--prefix-id", "demo-",
                  "--heap", HEAP, "--trust", digest,
                  "--health-deadline", str(HEALTH_DEADLINE),
                  "--config", json.dumps(DEVICE_CONFIG, separators=(",", ":")))
        tour.say("(run in-process here: fota_host.sim.fleet.Fleet, the same code)")
        http = None
        if proxy_port:
            http = HttpProxy(proxy_port, platform.api, LinkFaults(rate=rate), proxy=slow_proxy)
            tour.say(f"--slow: downloads go through a proxy at {rate / 1000:g} kB/s each")
        fleet = Fleet(work / "fleet", devices, platform.broker, BOARDS, OLD, heap=HEAP,
                      prefix_id="demo-", config=config, http=http).create()
        cleaned.append(f"{devices} devices")
        esp = [d for d in fleet.devices if d.board == "esp32"]
        older = esp[-1] if len(esp) > 1 else None
        base = (work / files["esp32", OLD]).read_bytes()
        for dev in esp:
            if dev is older:
                simflash.seed(dev.flash, ELDER)
            elif not install(dev.flash, base):
                tour.say(f"{files['esp32', OLD]} does not fit {dev.device_id}'s slot")
        tour.say(f"the ESP32 boards run {files['esp32', OLD]}"
                 + (f", except {older.device_id}: still on {ELDER}" if older else ""))
        fleet.start()
        client = platform.client()
        # devices are known to the platform once they have informed their version
        seen_deadline = time.monotonic() + 30
        while time.monotonic() < seen_deadline:
            if set(fleet.ids) <= {d["id"] for d in client.list_devices()}:
                break
            time.sleep(0.2)
        tour.say("each board connected and informed its version:")
        tour.fota("device", "list", "--data", "platform")
        by_board = {b: [i for i, d in zip(fleet.ids, fleet.devices, strict=True) if d.board == b]
                    for b in BOARDS}
        tour.step(f"Upload the packages; {NEW} for ESP32 gets a delta from {OLD}: boards "
                  f"on {OLD} download only the changes.")
        t0 = time.monotonic()
        deadline = t0 + timeout  # the time allowed counts from the first package made
        tasks: dict[str, int] = {}
        sizes: dict[int, dict[str, int]] = {}       # task -> kind -> bytes served
        old_pkg = tour.fota("package", "create", "--data", "platform", "--file",
                            files["esp32", OLD], "--version", OLD, "--name", "demo-esp32",
                            "--sign", "sha256")
        pkgs = {}
        for board in BOARDS:
            if by_board[board]:
                pkgs[board] = tour.fota("package", "create", "--data", "platform", "--file",
                                        files[board, NEW], "--version", NEW, "--name",
                                        f"demo-{board}", "--sign", "sha256")
        if "esp32" in pkgs:
            delta = tour.fota("package", "add-delta", "--data", "platform",
                              pkgs["esp32"]["id"], "--from", old_pkg["id"])
            tour.say(f"-> delta {delta['size']:,} bytes for {pkgs['esp32']['size']:,} "
                     f"({delta['ratio']:.1%} of the full image)")
        if any(len(by_board[b]) > 1 for b in pkgs):
            tour.step("One task per board kind (a task has one package), in two waves: one "
                      "board first, the rest once it succeeded.")
        else:
            tour.step("One task per board kind (a task has one package); with two boards "
                      "of a kind or more, it runs in two waves.")
        for board, pkg in pkgs.items():
            split = ("--wave", "1", "--wave", "rest") if len(by_board[board]) > 1 else ()
            waves = max(waves, 2 if split else 1)
            task = tour.fota("task", "create", "--data", "platform", "--package", pkg["id"],
                             "--name", f"{board} to {NEW}", *split)
            tour.fota("task", "add-devices", "--data", "platform", str(task["id"]),
                      *by_board[board])
            tasks[board] = task["id"]
            sizes[task["id"]] = {"full": pkg["size"]}
            if board == "esp32":
                sizes[task["id"]]["delta"] = delta["size"]
        tour.step("Start the tasks: notices go out, the boards download, verify the "
                  "signature, reboot into the new image and confirm it.")
        for tid in tasks.values():
            tour.fota("task", "start", "--data", "platform", str(tid))
        tour.say("the same live view, by hand: fota task watch --data platform TASK")
        tour.say(f"or in the browser: {platform.api}/console")
        rows = watch(client, tasks, fleet, deadline, console)
        seconds = round(time.monotonic() - t0, 1)
        # The platform's word and the device's flash must agree. A device confirms its new
        # image once the platform acknowledged its inform, so the flash may lag a moment.
        fleet.wait_versions(NEW, 10, [r["device"] for r in rows if r["state"] == "succeeded"])
        states = fleet.statuses()
        for row in rows:
            st = states.get(row["device"], {})
            row["version"] = st.get("version")
            row["board"] = st.get("board", "?")
            row["confirmed"] = not st.get("pending", True)
            row["ok"] = (row["state"] == "succeeded" and row["version"] == NEW
                         and row["confirmed"])
            served = sizes[row["task"]]
            row["full"] = served["full"]
            row["bytes"] = served.get(row.get("kind") or "full", served["full"])
        tour.step("What the platform says, next to what each board's flash says:")
        summary(rows, console, seconds, NEW)
        tour.say("the platform's own view: fota task show --data platform TASK")
    finally:
        console.print("Shutting down the devices and the platform ...")
        if fleet is not None:
            fleet.stop()
        platform.stop()
    ok = sum(r["ok"] for r in rows)
    saved = sum(r["full"] - r["bytes"] for r in rows if r["state"] == "succeeded")
    return {"devices": devices, "succeeded": ok, "failed": devices - ok, "seconds": seconds,
            "bytes_saved": saved, "waves": waves}


def _interrupt(signum: int, _frame: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)       # a second Ctrl-C: cleanup goes on
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Interrupted(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fota_host.sim.demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=6, help="at least 2 (default 6)")
    ap.add_argument("--size", type=int, default=1024 * 1024,
                    help="image size in bytes (Pico W: at most 320 KiB)")
    ap.add_argument("--timeout", type=float, default=60.0,
                    help="seconds for the upgrade, counted from creating the first package")
    ap.add_argument("--keep", nargs="?", const="", default=None, metavar="DIR",
                    help="keep the work folder (a new temporary one, or DIR)")
    ap.add_argument("--pace", type=float, default=0.0,
                    help="seconds to pause between the tour's steps (default 0)")
    ap.add_argument("--slow", action="store_true",
                    help=f"a pace a person can follow: --pace {SLOW_PACE:g} and downloads "
                         f"limited to {SLOW_RATE // 1000} kB/s each")
    args = ap.parse_args(argv)
    if args.devices < 2:
        ap.error("--devices must be at least 2 (both board kinds)")
    pace = args.pace or (SLOW_PACE if args.slow else 0.0)
    rate = SLOW_RATE if args.slow else None
    timeout = args.timeout if not args.slow else max(args.timeout, 300.0)
    console = Console(stderr=False)
    work = Path(args.keep).resolve() if args.keep else Path(tempfile.mkdtemp(prefix="fota-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    keep = args.keep is not None
    cleaned: list[str] = []
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    interrupted = None
    try:
        result = run(args.devices, args.size, timeout, work, console, pace, rate, cleaned)
    except (Interrupted, KeyboardInterrupt) as exc:
        interrupted = str(exc) or "SIGINT"
    except Exception as exc:  # noqa: BLE001 - say what broke, still end with the JSON line
        console.print(Text(f"demo failed: {exc}", style="red"))
        result = {"devices": args.devices, "succeeded": 0, "failed": args.devices,
                  "seconds": None, "error": str(exc)}
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    sys.stdout.flush()
    folder = f"kept {work}" if keep else f"removed {work}"
    if interrupted:
        stopped = " and ".join(reversed(cleaned)) if cleaned else "nothing had started"
        print(f"demo: interrupted ({interrupted}); stopped {stopped}; {folder}",
              file=sys.stderr, flush=True)
        return 130
    if keep:
        print(f"demo: the work folder is kept: {work}", file=sys.stderr, flush=True)
    print(json.dumps(result), flush=True)
    return 0 if result["failed"] == 0 and result["succeeded"] == result["devices"] else 1


if __name__ == "__main__":
    sys.exit(main())
