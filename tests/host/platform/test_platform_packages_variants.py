"""A package's delta and compressed files: made by the platform (`fota package add-delta`,
`fota package compress`), chosen per device from the version it informed, served by the
file server, and the automatic fallback to the full image after a -3."""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fota_host.images import delta, esp_image
from platform_fakes import FakeDevice, device_row, http_get, wait_device_state, wait_for

FOTA = [sys.executable, "-c", "from fota_host.cli import main; main()"]


def fota(*args: Any, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([*FOTA, *map(str, args)], capture_output=True, text=True, timeout=120)
    assert (proc.returncode == 0) == ok, proc.stdout + proc.stderr
    return proc


def fota_json(*args: Any) -> Any:
    return json.loads(fota(*args).stdout)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three releases of one 'application' (text-like data, edited a little each time) as
    ESP32 app images, and a random blob that no compressor shrinks."""
    root = tmp_path_factory.mktemp("releases")
    rnd = random.Random(15)
    words = [bytes(rnd.choice(b"abcdefghijklmnop") for _ in range(rnd.randint(2, 9)))
             for _ in range(500)]
    data = bytearray(b" ".join(rnd.choice(words) for _ in range(40_000)))
    out: dict[str, Path] = {}
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        for at in rnd.sample(range(len(data) - 64), 3):
            data[at:at + 32] = bytes(rnd.getrandbits(8) for _ in range(32))
        path = root / f"app-{version}.bin"
        path.write_bytes(esp_image.build_sim_image(version, None, payload=bytes(data)))
        out[version] = path
    out["random"] = root / "random.bin"
    out["random"].write_bytes(rnd.randbytes(100_000))
    return out


def test_add_delta_and_compress_commands(embedded, images: dict[str, Path]) -> None:
    embedded.start()
    d = str(embedded.data)
    old = fota_json("package", "create", "--data", d, "--file", images["1.0.0"])
    new = fota_json("package", "create", "--data", d, "--file", images["1.1.0"])
    assert (old["version"], new["version"]) == ("1.0.0", "1.1.0")  # read from the image
    v = fota_json("package", "add-delta", "--data", d, new["id"], "--from", old["id"])
    assert v["kind"] == "delta" and v["base_version"] == "1.0.0" and v["ratio"] < 0.1
    assert v["base_package"] == old["id"] and len(v["id"]) == 20
    c = fota_json("package", "compress", "--data", d, new["id"])
    assert c["kind"] == "compressed" and 0.1 < c["ratio"] < 0.6
    shown = fota_json("package", "show", "--data", d, new["id"], "--json")
    assert [x["kind"] for x in shown["variants"]] == ["delta", "compressed"]
    assert shown["size"] == images["1.1.0"].stat().st_size  # the package is the full image
    # Errors: clear, non-zero, nothing stored.
    err = fota("package", "add-delta", "--data", d, new["id"], "--from", old["id"],
               ok=False).stderr
    assert "has a delta from 1.0.0 already" in err
    assert "already" in fota("package", "compress", "--data", d, new["id"], ok=False).stderr
    assert "unknown package" in fota("package", "add-delta", "--data", d, new["id"], "--from",
                                     "0" * 20, ok=False).stderr
    assert "another package" in fota("package", "add-delta", "--data", d, new["id"],
                                     "--from", new["id"], ok=False).stderr
    blob = fota_json("package", "create", "--data", d, "--file", images["random"],
                     "--version", "9.9.9")
    err = fota("package", "compress", "--data", d, blob["id"], ok=False).stderr
    assert "not smaller than the full image" in err
    assert fota_json("package", "show", "--data", d, blob["id"], "--json")["variants"] == []
    files = sorted(p.name for p in (embedded.data / "packages").iterdir())
    assert len(files) == 5 and not any(n.startswith(".") for n in files)


def _packages(api, images: dict[str, Path]) -> tuple[dict, dict, dict]:
    old = api.create_package(file=str(images["1.0.0"]))
    mid = api.create_package(file=str(images["1.1.0"]))
    new = api.create_package(file=str(images["1.2.0"]))
    return old, mid, new


def _check_served(dev: FakeDevice, notice: dict, kind: str, variant: dict | None,
                  images: dict[str, Path], base: str | None = None) -> bytes:
    """The notice offers the file of `kind`; downloading it gives that file, which
    rebuilds the 1.2.0 image."""
    status, body, _ = http_get(dev.download_url(notice))
    assert status == 200
    p = notice["payload"]
    assert set(p) == {"size", "version", "url", "md5", "token", "module"}
    assert (p["size"], p["md5"]) == (len(body), hashlib.md5(body).hexdigest())
    assert p["version"] == "1.2.0"
    target = images["1.2.0"].read_bytes()
    if kind == "full":
        assert body == target
    else:
        assert variant is not None and p["md5"] == variant["md5"]
        assert p["url"].split("/")[-2] == variant["id"]
        assert delta.describe(body)["kind"] == kind
        assert delta.decode(body, images[base].read_bytes() if base else None) == target
    return body


def test_each_device_gets_its_delta_or_compressed_or_full(embedded, images) -> None:
    embedded.start(device_timeout=30, retries=0)
    api = embedded.api
    old, mid, new = _packages(api, images)
    d_old = api.add_variant(new["id"], "delta", old["id"])
    d_mid = api.add_variant(new["id"], "delta", mid["id"])
    task = api.create_task(package=new["id"], name="to 1.2.0")
    versions = {"on-old": "1.0.0", "on-mid": "1.1.0", "on-other": "0.5.0"}
    api.add_devices(task["id"], list(versions))
    devs = {n: FakeDevice(n, embedded.broker, version=v).start() for n, v in versions.items()}
    try:
        wait_for(lambda: {x["id"] for x in api.list_devices()} >= set(versions))
        api.start_task(task["id"])
        notices = {n: dev.wait_notice() for n, dev in devs.items()}
        _check_served(devs["on-old"], notices["on-old"], "delta", d_old, images, "1.0.0")
        _check_served(devs["on-mid"], notices["on-mid"], "delta", d_mid, images, "1.1.0")
        _check_served(devs["on-other"], notices["on-other"], "full", None, images)
        kinds = {r["device"]: r["kind"] for r in api.get_task(task["id"])["devices"]}
        assert kinds == {"on-old": "delta", "on-mid": "delta", "on-other": "full"}
        # A device may not fetch another sub-task's file with its own token.
        wrong = dict(notices["on-old"])
        wrong["payload"] = {**wrong["payload"], "url": notices["on-mid"]["payload"]["url"]}
        assert http_get(devs["on-old"].download_url(wrong))[0] == 403
        for n, dev in devs.items():
            dev.upgrade(notices[n])
            wait_device_state(api, task["id"], n, "succeeded")
    finally:
        for dev in devs.values():
            dev.stop()


def test_compressed_when_no_delta_fits_and_task_show_says_so(embedded, images) -> None:
    embedded.start(device_timeout=30)
    api = embedded.api
    old, _, new = _packages(api, images)
    api.add_variant(new["id"], "delta", old["id"])
    comp = api.add_variant(new["id"], "compressed")
    task = api.create_task(package=new["id"], name="to 1.2.0")
    api.add_devices(task["id"], ["on-other"])
    dev = FakeDevice("on-other", embedded.broker, version="0.5.0").start()
    try:
        wait_for(lambda: api.list_devices())
        api.start_task(task["id"])
        notice = dev.wait_notice()
        _check_served(dev, notice, "compressed", comp, images)
        d = str(embedded.data)
        shown = fota_json("task", "show", "--data", d, str(task["id"]), "--json")
        assert shown["devices"][0]["kind"] == "compressed"
        table = fota("task", "show", "--data", d, str(task["id"])).stdout
        assert "compressed" in table
    finally:
        dev.stop()


@pytest.mark.parametrize("kind", ["delta", "compressed"])
def test_refused_variant_falls_back_to_full_whatever_retries(embedded, images, kind) -> None:
    embedded.start(device_timeout=30, retries=0)
    api = embedded.api
    old, _, new = _packages(api, images)
    api.add_variant(new["id"], kind, old["id"] if kind == "delta" else None)
    task = api.create_task(package=new["id"], name="to 1.2.0")
    api.add_devices(task["id"], ["dev-1"])
    dev = FakeDevice("dev-1", embedded.broker, version="1.0.0").start()
    try:
        wait_for(lambda: api.list_devices())
        api.start_task(task["id"])
        first = dev.wait_notice()
        assert first["payload"]["size"] < new["size"]
        assert device_row(api, task["id"], "dev-1")["kind"] == kind
        dev.progress(first["taskId"], -3, "delta base mismatch")
        second = dev.wait_notice(timeout=15)
        assert second["taskId"] == first["taskId"]
        _check_served(dev, second, "full", None, images)
        row = device_row(api, task["id"], "dev-1")
        assert row["kind"] == "full" and row["attempts"] == 0
        assert row["state"] == "pending" or row["state"] == "upgrading"
        # A -3 for the full image is a failure as usual (retries 0: final).
        dev.progress(second["taskId"], -3, "bad signature")
        failed = wait_device_state(api, task["id"], "dev-1", "failed")
        assert failed["desc"] == "bad signature" and failed["kind"] == "full"
        assert dev.no_notice(1.0)
    finally:
        dev.stop()


def test_other_failures_of_a_variant_follow_the_retries(embedded, images) -> None:
    """-2 (a download failure) on a delta is not the device refusing it: no fallback."""
    embedded.start(device_timeout=30, retries=0)
    api = embedded.api
    old, _, new = _packages(api, images)
    api.add_variant(new["id"], "delta", old["id"])
    task = api.create_task(package=new["id"], name="to 1.2.0")
    api.add_devices(task["id"], ["dev-2"])
    dev = FakeDevice("dev-2", embedded.broker, version="1.0.0").start()
    try:
        wait_for(lambda: api.list_devices())
        api.start_task(task["id"])
        notice = dev.wait_notice()
        dev.progress(notice["taskId"], -2, "connection reset")
        row = wait_device_state(api, task["id"], "dev-2", "failed")
        assert row["kind"] == "delta"
    finally:
        dev.stop()


def test_a_store_made_before_variants_opens_with_them(tmp_path: Path, images) -> None:
    """A data folder from before signatures and variants: its packages are listed (not
    signed, no variants) and get deltas like new ones."""
    import sqlite3

    from fota_host.platform.client import LocalClient
    from fota_host.platform.store import SCHEMA

    data = tmp_path / "old"
    (data / "packages").mkdir(parents=True)
    db = sqlite3.connect(data / "platform.db")
    db.executescript(SCHEMA)
    for pid, version in (("a" * 20, "1.0.0"), ("b" * 20, "1.1.0")):
        image = images[version].read_bytes()
        (data / "packages" / f"{pid}.bin").write_bytes(image)
        db.execute("INSERT INTO packages (id, name, product, version, module, sign, size, md5,"
                   " sha256, desc, source, created) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                   (pid, version, "p", version, "MCU", "md5", len(image),
                    hashlib.md5(image).hexdigest(), hashlib.sha256(image).hexdigest(), "",
                    "file", 1.0))
    db.commit()
    db.close()
    ops = LocalClient(data)
    try:
        listed = ops.list_packages()
        assert [(p["version"], p["signed"], p["key_digests"], p["variants"]) for p in listed] \
            == [("1.0.0", False, [], []), ("1.1.0", False, [], [])]
        v = ops.add_variant("b" * 20, "delta", "a" * 20)
        assert v["kind"] == "delta" and v["base_version"] == "1.0.0"
    finally:
        ops.close()


def test_variant_api_refuses_bad_requests(embedded, images) -> None:
    from fota_host.platform.validate import PlatformError

    embedded.start()
    api = embedded.api
    old, mid, _ = _packages(api, images)
    for kind, base, status, words in (("bogus", None, 400, "kind must be"),
                                      ("delta", None, 404, "unknown package"),
                                      ("delta", "../../etc", 404, "unknown package")):
        with pytest.raises(PlatformError) as err:
            api.add_variant(mid["id"], kind, base)
        assert err.value.status == status and words in str(err.value)
    with pytest.raises(PlatformError) as err:
        api.add_variant("f" * 20, "compressed")
    assert err.value.status == 404
    assert api.get_package(mid["id"])["variants"] == []
    assert api.add_variant(mid["id"], "delta", old["id"])["kind"] == "delta"
