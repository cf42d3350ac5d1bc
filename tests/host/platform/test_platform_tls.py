"""HTTPS downloads and API (--tls-cert/--tls-key) and an mqtts:// external broker."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import urllib.request
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fota_host.platform.process import start_platform
from helpers import Mosquitto, free_port, wait_port
from platform_fakes import FakeDevice, make_task, wait_device_state


def make_cert(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    os.chmod(key_path, 0o644)
    return cert_path, key_path


def test_https_downloads_and_api(tmp_path: Path, firmware: Path) -> None:
    cert, key = make_cert(tmp_path)
    proc = start_platform(tmp_path / "data", tls_cert=cert, tls_key=key)
    try:
        assert proc.api.startswith("https://") and proc.file_base.startswith("https://")
        api = proc.client()  # trusts service.json's tls_cert
        _, task = make_task(api, firmware, ["tls-1"], "tls")
        dev = FakeDevice("tls-1", proc.broker).start()
        try:
            api.start_task(task["id"])
            notice = dev.wait_notice()
            ctx = ssl.create_default_context(cafile=str(cert))
            with urllib.request.urlopen(dev.download_url(notice), context=ctx) as resp:
                assert resp.read() == firmware.read_bytes()
            dev.progress(notice["taskId"], 100, "ok")
            dev.inform(notice["taskId"], "2.0.0")
            wait_device_state(api, task["id"], "tls-1", "succeeded")
        finally:
            dev.stop()
    finally:
        proc.stop()


def test_mqtts_external_broker(tmp_path: Path, firmware: Path) -> None:
    cert, key = make_cert(tmp_path)
    tls_port = free_port()
    # (tests/helpers.Mosquitto keeps root, so it can read the key in pytest's folder)
    broker = Mosquitto(tmp_path, extra_conf=f"listener {tls_port} 127.0.0.1\n"
                                            f"certfile {cert}\nkeyfile {key}\n").start()
    wait_port(tls_port)
    try:
        proc = start_platform(tmp_path / "data", broker=f"mqtts://127.0.0.1:{tls_port}",
                              ca=cert)
        try:
            api = proc.client()
            _, task = make_task(api, firmware, ["s-1"], "mqtts")
            dev = FakeDevice("s-1", broker.url).start()  # the device on the plain listener
            try:
                api.start_task(task["id"])
                dev.upgrade(dev.wait_notice())
                wait_device_state(api, task["id"], "s-1", "succeeded")
            finally:
                dev.stop()
        finally:
            proc.stop()
    finally:
        broker.stop()


def test_bad_tls_files_are_refused_before_anything_starts(tmp_path: Path) -> None:
    """A wrong --tls-cert/--tls-key (not PEM, a key of another certificate, an encrypted key)
    is one error naming both files: no broker traceback, no data folder, no prompt."""
    import subprocess
    import sys

    from cryptography.hazmat.primitives.serialization import BestAvailableEncryption

    cert, key = make_cert(tmp_path)
    (tmp_path / "other").mkdir()
    other_cert, _ = make_cert(tmp_path / "other")
    locked = tmp_path / "locked.pem"
    locked.write_bytes(serialization.load_pem_private_key(key.read_bytes(), None)
                       .private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      BestAvailableEncryption(b"secret")))
    notpem = tmp_path / "passwd.txt"
    notpem.write_text("root:x:0:0:root:/root:/bin/bash\n")
    for bad_cert, bad_key, why in ((notpem, notpem, "PEM"), (other_cert, key, "belong"),
                                   (cert, locked, "encrypted")):
        data = tmp_path / f"data-{why}"
        proc = subprocess.run(
            [sys.executable, "-m", "fota_host", "platform", "serve", "--data", str(data),
             "--http-port", "0", "--mqtt-port", "0",
             "--tls-cert", str(bad_cert), "--tls-key", str(bad_key)],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert proc.returncode != 0, why
        assert why in proc.stderr and str(bad_key) in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr, proc.stderr
        assert not data.exists()
