"""The device's one JSON config file: load, fill defaults, and say clearly what is wrong.

Example (docs/device-config.md documents every key):
    {"device_id": "device10001",
     "broker": {"host": "192.168.1.10", "port": 1883, "user": "device10001",
                "password": "...", "tls": false, "ca": "ca.pem", "keepalive": 60},
     "topic_prefix": "devices/device10001", "module": "MCU",
     "wifi": {"ssid": "...", "password": "..."},
     "progress_step": 5, "progress_interval_s": 10, "health_deadline_s": 60}
"""
from micropython import const

DEFAULTS = {
    "module": "MCU",
    "topic_prefix": None,           # None: "devices/<device_id>"; "" for real CTWing
    "progress_step": 5,
    "progress_interval_s": 10,
    "health_deadline_s": 60,
    "max_trials": 3,                # file slots: unconfirmed boots before falling back
    "wdt_s": 0,                     # 0: no watchdog; else >= 4 (fed at least every second)
    "desc_lang": "en",              # "zh": failure descs start with CTWing-style Chinese
    "download": None,
    "wifi": None,
    "trusted_keys": (),             # signing key digests (64 hex); empty: no signature check
    "allow_unsigned": False,        # with trusted_keys: also take images with no signature
    "reboot_defer_max_s": 300,      # longest wait for an app's may_reboot() after step 100
}
_MAX_KEYS = const(3)                # as many as a Secure Boot V2 sector holds
# timeout_s: connect and TLS handshake; idle_s: longest silence while downloading;
# total_s: one download attempt, redirects included (see fota.http).
# start_delay_s: a random wait of up to this before a download (a wave of devices spreads).
DOWNLOAD = {"ca": None, "allow_insecure": False, "url_as_is": False, "timeout_s": 10,
            "idle_s": 30, "total_s": 3600, "start_delay_s": 5}
# tls_during_download "close": the MQTT TLS session is closed for the length of a
# download (boards that cannot hold two TLS sessions; README: RAM).
BROKER = {"port": None, "user": None, "password": None, "tls": False, "ca": None,
          "keepalive": 60, "timeout_s": 10, "insecure": False, "tls_during_download": "keep"}


class ConfigError(ValueError):
    pass


def _need(cond, msg):
    if not cond:
        raise ConfigError(msg)


def _merge(defaults, given, where):
    _need(given is None or isinstance(given, dict), where + " must be an object")
    out = dict(defaults)
    if given:
        out.update(given)
    return out


def _num(cfg, key, low):
    v = cfg[key]
    _need(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= low,
          "%s must be a number >= %s" % (key, low))


def validate(cfg):
    _need(isinstance(cfg, dict), "the config must be a JSON object")
    out = dict(DEFAULTS)
    out.update(cfg)
    dev = out.get("device_id")
    _need(isinstance(dev, str) and dev and "/" not in dev and "+" not in dev and "#" not in dev,
          "device_id must be a non-empty string without / + #")
    b = _merge(BROKER, out.get("broker"), "broker")
    _need(isinstance(b.get("host"), str) and b["host"], "broker.host must be a string")
    if b["port"] is None:
        b["port"] = 8883 if b["tls"] else 1883
    _need(isinstance(b["port"], int) and 0 < b["port"] < 65536, "broker.port must be 1..65535")
    _need(not b["tls"] or b["ca"] or b["insecure"],
          "broker.tls needs broker.ca (a CA certificate file) or broker.insecure")
    _need(b["tls_during_download"] in ("keep", "close"),
          'broker.tls_during_download must be "keep" or "close"')
    out["broker"] = b
    d = out["download"] = _merge(DOWNLOAD, out.get("download"), "download")
    for key in ("timeout_s", "idle_s", "total_s"):
        v = d[key]
        _need(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0,
              "download.%s must be a number > 0" % key)
    v = d["start_delay_s"]
    _need(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 600,
          "download.start_delay_s must be a number from 0 to 600")
    if out["topic_prefix"] is None:
        out["topic_prefix"] = "devices/" + dev
    _need(isinstance(out["topic_prefix"], str), "topic_prefix must be a string")
    _need(isinstance(out["module"], str), "module must be a string")
    for key, low in (("progress_step", 1), ("progress_interval_s", 0),
                     ("health_deadline_s", 1), ("max_trials", 1), ("wdt_s", 0),
                     ("reboot_defer_max_s", 0)):
        _num(out, key, low)
    _need(not out["wdt_s"] or out["wdt_s"] >= 4,
          "wdt_s must be 0 (no watchdog) or at least 4 (seconds)")
    _need(out["desc_lang"] in ("en", "zh"), 'desc_lang must be "en" or "zh"')
    _trust(out)
    w = out.get("wifi")
    _need(w is None or (isinstance(w, dict) and isinstance(w.get("ssid"), str)),
          "wifi must be an object with ssid and password")
    return out


def _trust(out):
    """trusted_keys/allow_unsigned; a frozen `fota_trust` module (TRUSTED_KEYS,
    ALLOW_UNSIGNED), when the firmware has one, overrides the file (README:
    Signing your images)."""
    try:
        import fota_trust  # pyright: ignore[reportMissingImports] (frozen by the user)

        out["trusted_keys"] = fota_trust.TRUSTED_KEYS
        out["allow_unsigned"] = getattr(fota_trust, "ALLOW_UNSIGNED", False)
    except ImportError:
        pass
    keys = out["trusted_keys"]
    _need(isinstance(keys, (list, tuple)) and len(keys) <= _MAX_KEYS,
          "trusted_keys must be a list of at most 3 key digests")
    for k in keys:
        ok = isinstance(k, str) and len(k) == 64
        if ok:
            try:
                int(k, 16)
            except ValueError:
                ok = False
        _need(ok, "trusted_keys: %r is not a 64-hex-digit key digest" % (k,))
    out["trusted_keys"] = [k.lower() for k in keys]
    _need(isinstance(out["allow_unsigned"], bool), "allow_unsigned must be true or false")


def load(path="fota_config.json"):
    import json

    try:
        with open(path) as f:
            cfg = json.load(f)
    except OSError:
        raise ConfigError("cannot read %s: copy the example config there" % path)
    except ValueError:
        raise ConfigError("%s is not valid JSON" % path)
    return validate(cfg)
