"""End to end with signed images and deltas: the platform (child process), its embedded
broker, and simulated devices running the real device code.

- Signed packages install on devices that trust the key; a device trusting another key
  refuses (-3 "untrusted key") and keeps its image.
- A package with a delta from an earlier package: a device running that earlier
  package gets the delta, a device on another version the full image, and a device
  whose image is not the delta's base answers -3 and gets the full image next,
  automatically.
"""

from __future__ import annotations

import pytest
from e2e_world import NEW, OLD, SIZE
from fota_host.images import esp_image, signing
from fota_host.images import synthetic as images
from fota_host.sim import flash as simflash
from fota_host.sim.flash import SEED_IMAGE_SIZE

pytestmark = pytest.mark.parametrize("world", ["embedded"], indirect=True)
# RSA-3072 and the delta decoder need more heap than a plain update in the simulated
# agent (64-bit port; make bench measures agent_signed_min_heap_kib and
# delta_agent_min_heap_kib).
HEAP = "160K"


def device(world, dev_id: str, start: bool = True, **config):
    dev = world.device(dev_id, start=False, **config)
    dev.heap = HEAP
    if start:
        dev.start()
    return dev


def test_signed_package_installs_where_the_key_is_trusted(world, tmp_path):
    key = signing.generate_key(tmp_path / "release.pem")
    other = signing.generate_key(tmp_path / "other.pem")
    world.start()
    device(world, "trusts", trusted_keys=[signing.key_digest(key)])
    device(world, "other", trusted_keys=[signing.key_digest(other)])
    world.online("trusts", "other")
    data = signing.sign(images.sim_image("esp32", NEW, SIZE["esp32"]), key)
    pkg = world.package("esp32", data)
    assert pkg.get("signed") and signing.key_digest(key) in pkg.get("key_digests", []), pkg
    tid = world.task(pkg, "trusts", "other")
    ok = world.wait_sub(tid, "trusts", timeout=90)
    assert ok["state"] == "succeeded", ok
    refused = world.wait_sub(tid, "other", timeout=90)
    assert refused["state"] == "failed" and refused["step"] == -3, refused
    assert "untrusted key" in refused["desc"], refused
    assert world.devices["trusts"].wait_for(lambda s: s["version"] == NEW)["version"] == NEW
    assert simflash.status(world.devices["other"].flash)["version"] == OLD


def test_delta_for_devices_on_its_base_full_for_the_others_and_fallback(world, tmp_path):
    world.start()
    # The base package is the very image the devices were seeded with (same version,
    # same bytes), as after an earlier rollout of it.
    base = images.sim_image("esp32", OLD, SEED_IMAGE_SIZE)
    on_base = device(world, "on-base")
    elsewhere = device(world, "elsewhere", start=False)
    lookalike = device(world, "lookalike", start=False)
    # 'elsewhere' runs another version; 'lookalike' claims the base version but its
    # bytes differ (a local build): the delta does not apply there.
    (elsewhere.flash / "ota_0").write_bytes(
        esp_image.build_sim_image("0.9.0", SEED_IMAGE_SIZE).ljust(
            (elsewhere.flash / "ota_0").stat().st_size, b"\xff"))
    (lookalike.flash / "ota_0").write_bytes(
        esp_image.build_sim_image(OLD, SEED_IMAGE_SIZE + 4096).ljust(
            (lookalike.flash / "ota_0").stat().st_size, b"\xff"))
    elsewhere.start()
    lookalike.start()
    world.online("on-base", "elsewhere", "lookalike")
    (tmp_path / "old.bin").write_bytes(base)
    old_pkg = world.api.create_package(file=str(tmp_path / "old.bin"), version=OLD)
    # The new release keeps most of the old one's bytes (as real releases do).
    new_img = esp_image.build_sim_image(NEW, None, payload=base[300:-64] + b"new code" * 64)
    new_pkg = world.package("esp32", new_img)
    variant = world.api.add_variant(new_pkg["id"], "delta", base=old_pkg["id"])
    assert variant["size"] < len(new_img) // 4, variant
    tid = world.task(new_pkg, "on-base", "elsewhere", "lookalike")
    rows = {d: world.wait_sub(tid, d, timeout=120) for d in ("on-base", "elsewhere", "lookalike")}
    assert all(r["state"] == "succeeded" for r in rows.values()), rows
    assert rows["on-base"]["kind"] == "delta", rows
    assert rows["elsewhere"]["kind"] == "full", rows
    assert rows["lookalike"]["kind"] == "full", rows      # after its -3 on the delta
    assert "delta base mismatch" in world.log("lookalike")
    for dev in ("on-base", "elsewhere", "lookalike"):
        st = world.devices[dev].wait_for(lambda s: s["version"] == NEW and not s["pending"])
        assert st["version"] == NEW
    assert (on_base.flash / simflash.status(on_base.flash)["running"]).read_bytes()[
        :len(new_img)] == new_img
