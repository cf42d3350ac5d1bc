"""GET /metrics: Prometheus text a scraper parses, counting what a real upgrade did; the
token rule (metrics.token or the admin token, nothing else)."""

from __future__ import annotations

import json
from pathlib import Path

from platform_fakes import FakeDevice, http_get, wait_device_state, wait_for
from prometheus_client.parser import text_string_to_metric_families

FAST = {"device_timeout": 30, "retry_backoff": 0.3}


def scrape(env, token: str | None = None) -> tuple[int, dict[tuple[str, tuple], float]]:
    token = token if token is not None else (env.data / "metrics.token").read_text().strip()
    status, body, headers = http_get(env.proc.api + "/metrics",
                                     {"Authorization": f"Bearer {token}"})
    if status != 200:
        return status, {}
    assert headers["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return status, samples


def value(samples: dict, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    return sum(v for (n, ls), v in samples.items()
               if n == name and set(labels.items()) <= set(ls))


def test_metrics_count_an_upgrade(embedded, firmware: Path) -> None:
    env = embedded
    env.start(**FAST)
    api = env.api
    pkg = api.create_package(file=str(firmware), version="2.0.0", product="demo")
    task = api.create_task(package=pkg["id"], name="to 2.0.0")
    api.add_devices(task["id"], ["dev-m"])
    dev = FakeDevice("dev-m", env.broker).start()
    try:
        api.start_task(task["id"])
        notice = dev.wait_notice()
        # a request with a wrong token is refused, and counted as such
        assert http_get(dev.download_url(notice, token="nope"))[0] == 403
        dev.upgrade(notice, steps=(10, 50, 100))
        wait_device_state(api, task["id"], "dev-m", "succeeded")
        dev.publish("progress", None, raw=b"not json")
        instance = json.loads((env.data / "service.json").read_text())["instance"]

        def settled() -> dict | None:
            status, samples = scrape(env)
            assert status == 200
            done = value(samples, "fota_reports_rejected_total") >= 1 and \
                value(samples, "fota_notices_sent_total") >= 1
            return samples if done else None

        samples = wait_for(settled, 20, what="the counters")
    finally:
        dev.stop()
    me = {"instance": instance}
    assert value(samples, "fota_notices_sent_total", **me) == 1
    assert value(samples, "fota_reports_total", kind="progress", **me) == 4  # 3 + garbage
    assert value(samples, "fota_reports_total", kind="inform", **me) == 2
    assert value(samples, "fota_reports_rejected_total", **me) == 1
    assert value(samples, "fota_downloads_started_total", **me) == 1
    assert value(samples, "fota_downloads_completed_total", **me) == 1
    assert value(samples, "fota_downloads_refused_total", **me) == 1
    assert value(samples, "fota_download_bytes_total", **me) == firmware.stat().st_size
    assert value(samples, "fota_subtasks", task=str(task["id"]), state="succeeded",
                 **me) == 1
    assert value(samples, "fota_broker_connected", **me) == 1


def test_metrics_need_a_token(embedded, firmware: Path) -> None:
    env = embedded
    env.start()
    metrics_token = (env.data / "metrics.token").read_text().strip()
    assert (env.data / "metrics.token").stat().st_mode & 0o077 == 0
    assert scrape(env, metrics_token)[0] == 200
    assert scrape(env, env.proc.admin_token)[0] == 200  # the admin token works too
    assert scrape(env, "wrong")[0] == 401
    assert http_get(env.proc.api + "/metrics")[0] == 401
    # the metrics token opens nothing else
    status, _, _ = http_get(env.proc.api + "/api/tasks",
                            {"Authorization": f"Bearer {metrics_token}"})
    assert status == 401


def test_openmetrics_on_request(embedded) -> None:
    env = embedded
    env.start()
    token = (env.data / "metrics.token").read_text().strip()
    status, body, headers = http_get(env.proc.api + "/metrics", {
        "Authorization": f"Bearer {token}",
        "Accept": "application/openmetrics-text; version=1.0.0"})
    assert status == 200
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    text = body.decode()
    assert text.endswith("# EOF\n") and text.count("# EOF") == 1
    assert "fota_broker_connected" in text
