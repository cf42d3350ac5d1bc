# fota.config on the unix port: defaults, and a clear error for each wrong value.
from checks import equal, raises
from fota import config


def cfg(**over):
    c = {"device_id": "d1", "broker": {"host": "10.0.0.1"}}
    c.update(over)
    return c


def test_defaults_are_filled_in():
    out = config.validate(cfg())
    equal(out["topic_prefix"], "devices/d1")
    equal(out["module"], "MCU")
    equal((out["broker"]["port"], out["broker"]["keepalive"], out["broker"]["tls"]),
          (1883, 60, False))
    equal(out["download"], {"ca": None, "allow_insecure": False, "url_as_is": False,
                            "timeout_s": 10, "idle_s": 30, "total_s": 3600,
                            "start_delay_s": 5})
    equal(out["desc_lang"], "en")
    equal((out["progress_step"], out["health_deadline_s"], out["wdt_s"]), (5, 60, 0))
    equal(out["reboot_defer_max_s"], 300)


def test_start_delay_and_reboot_defer_are_checked():
    out = config.validate(cfg(download={"start_delay_s": 0}, reboot_defer_max_s=0))
    equal((out["download"]["start_delay_s"], out["reboot_defer_max_s"]), (0, 0))
    raises(config.ConfigError, config.validate, cfg(download={"start_delay_s": -1}),
           says="start_delay_s")
    raises(config.ConfigError, config.validate, cfg(download={"start_delay_s": 601}),
           says="start_delay_s")
    raises(config.ConfigError, config.validate, cfg(reboot_defer_max_s="10"),
           says="reboot_defer_max_s")


def test_tls_defaults_to_port_8883_and_needs_a_ca():
    raises(config.ConfigError, config.validate, cfg(broker={"host": "h", "tls": True}),
           says="broker.ca")
    out = config.validate(cfg(broker={"host": "h", "tls": True, "ca": "ca.pem"}))
    equal(out["broker"]["port"], 8883)
    equal(config.validate(cfg(broker={"host": "h", "tls": True, "insecure": True}))
          ["broker"]["port"], 8883)


def test_empty_prefix_is_kept_for_real_ctwing():
    equal(config.validate(cfg(topic_prefix=""))["topic_prefix"], "")


def test_device_id_must_be_usable_in_topics():
    for dev in ("", "a/b", "a+b", "a#", 5, None):
        raises(config.ConfigError, config.validate, cfg(device_id=dev), says="device_id")


def test_broker_needs_a_host_and_a_valid_port():
    raises(config.ConfigError, config.validate, cfg(broker={}), says="broker.host")
    raises(config.ConfigError, config.validate, cfg(broker="h"), says="broker must be")
    for port in (0, 65536, "1883"):
        raises(config.ConfigError, config.validate, cfg(broker={"host": "h", "port": port}),
               says="broker.port")


def test_numbers_have_lower_bounds():
    for key, bad in (("progress_step", 0), ("health_deadline_s", 0.5), ("max_trials", 0),
                     ("wdt_s", -1), ("progress_interval_s", True)):
        raises(config.ConfigError, config.validate, cfg(**{key: bad}), says=key)


def test_wifi_needs_an_ssid():
    raises(config.ConfigError, config.validate, cfg(wifi={"password": "x"}), says="wifi")
    equal(config.validate(cfg(wifi={"ssid": "net"}))["wifi"], {"ssid": "net"})


def test_not_an_object_is_refused():
    raises(config.ConfigError, config.validate, [1], says="JSON object")
    raises(config.ConfigError, config.validate, cfg(download=[]), says="download")


def test_load_says_which_file_is_wrong():
    raises(config.ConfigError, config.load, "no-such-config.json", says="cannot read")
    with open("bad.json", "w") as f:
        f.write("{not json")
    raises(config.ConfigError, config.load, "bad.json", says="bad.json is not valid JSON")
    with open("good.json", "w") as f:
        f.write('{"device_id": "d2", "broker": {"host": "h"}}')
    equal(config.load("good.json")["topic_prefix"], "devices/d2")


def test_watchdog_is_off_or_at_least_four_seconds():
    # fed at least once a second (downloads included): wdt/4 needs wdt >= 4 s
    for bad in (1, 3.9):
        raises(config.ConfigError, config.validate, cfg(wdt_s=bad), says="wdt_s")
    equal(config.validate(cfg(wdt_s=0))["wdt_s"], 0)
    equal(config.validate(cfg(wdt_s=30))["wdt_s"], 30)   # a board clamps it (fota.board)


def test_download_deadlines_are_positive_numbers():
    for key in ("timeout_s", "idle_s", "total_s"):
        for bad in (0, -1, "5", True):
            raises(config.ConfigError, config.validate, cfg(download={key: bad}),
                   says="download." + key)
    equal(config.validate(cfg(download={"idle_s": 2.5}))["download"]["idle_s"], 2.5)


def test_desc_lang_is_en_or_zh():
    equal(config.validate(cfg(desc_lang="zh"))["desc_lang"], "zh")
    raises(config.ConfigError, config.validate, cfg(desc_lang="fr"), says="desc_lang")
