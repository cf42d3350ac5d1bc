"""The admin API against its own OpenAPI document (#12.14): a bounded schemathesis run
(pinned; every check, a fixed seed and a few examples per operation, about half a
minute) finds no
request the document allows that the server refuses, no server error, no undocumented
status and no response out of its schema; every refusal is one log line, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fota_host.platform.process import start_platform
from fota_host.platform.validate import PlatformError

ST_CONFIG = """
[checks.positive_data_acceptance]
# 422: well-formed, but against a rule no schema can state (an end before the start,
# a version the image contradicts); 404/409: the resource is missing or in another state
expected-statuses = ["2xx", "401", "404", "409", "422"]

[[operations]]
# a package from a URL the platform can't fetch is a 502, documented (the test's proxy
# refuses every fetch: no request leaves the machine); a 500 there still fails
# status_code_conformance
include-path = "/api/packages"
include-method = "POST"
checks.not_a_server_error.enabled = false
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "404", "409", "422", "502"]
"""


def test_schemathesis_finds_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    st = Path(sys.executable).with_name("st")
    if not st.exists():
        pytest.fail("schemathesis is not installed: make setup (it is a dev dependency)")
    proxies = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")
    for name in proxies:  # the platform's fetches fail at once, locally
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.setenv("no_proxy", "")
    plat = start_platform(tmp_path / "data")
    for name in proxies:  # this process talks to the platform directly
        monkeypatch.delenv(name)
    try:
        api = plat.client()
        firmware = tmp_path / "fw.bin"
        firmware.write_bytes(os.urandom(4096))
        api.create_package(file=str(firmware), version="1.0.0")  # something to find
        config = tmp_path / "schemathesis.toml"
        config.write_text(ST_CONFIG)
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        result = subprocess.run(
            [str(st), "--no-color", "--config-file", str(config), "run",
             f"{plat.api}/openapi.json", "-H", f"Authorization: Bearer {plat.admin_token}",
             "--max-examples", "8", "--seed", "1", "--workers", "1",
             "--request-timeout", "10", "--phases", "examples,coverage,fuzzing",
             "--suppress-health-check", "all", "--generation-database", "none"],
            capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    finally:
        plat.stop()
    report = result.stdout[-6000:] + result.stderr[-2000:]
    assert result.returncode == 0, report
    log = (tmp_path / "data" / "platform.log").read_text()
    assert "Traceback" not in log


def test_unusable_package_urls_are_a_400(tmp_path: Path) -> None:
    """URLs urllib can't even try (bad IPv6 brackets, a port out of range) were a 500 with
    a traceback in the log."""
    plat = start_platform(tmp_path / "data")
    try:
        api = plat.client()
        for url in ("http://[", "http://h:99999/x", "ftp://h/x", "http:///x", 7):
            with pytest.raises(PlatformError) as refused:
                api.call("POST", "/api/packages", {"url": url, "version": "1"})
            assert refused.value.status == 400, url
    finally:
        plat.stop()
    assert "Traceback" not in (tmp_path / "data" / "platform.log").read_text()
