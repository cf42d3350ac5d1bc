# fota.protocol on the unix port: notice validation, the download address, messages.
import json

from checks import equal, raises
from fota import protocol

MD5 = "0123456789abcdef0123456789ABCDEF"
URL = "https://dmfile.ctwing.cn/file/upgrade/32128a6e8c3e15aea1c7/147589"


def notice(**payload):
    p = {"size": 1000, "version": "2.0.0", "url": URL, "md5": MD5, "token": "token",
         "module": "MCU"}
    p.update(payload)
    return json.dumps({"taskId": 1, "payload": p})


def test_a_valid_notice_gives_its_task_and_payload():
    task, p = protocol.parse_notice(notice())
    equal(task, 1)
    equal((p["size"], p["version"], p["url"], p["md5"]), (1000, "2.0.0", URL, MD5))


def test_a_notice_as_bytes_is_parsed():
    equal(protocol.parse_notice(notice().encode())[0], 1)


def test_sha256_is_optional_but_checked():
    equal(protocol.parse_notice(notice(sha256="ab" * 32))[1]["sha256"], "ab" * 32)
    raises(ValueError, protocol.parse_notice, notice(sha256="ab"), says="sha256")
    # 64 characters that are not hex: refused at the notice, not after the whole download
    raises(ValueError, protocol.parse_notice, notice(sha256="zz" * 32), says="sha256")
    raises(ValueError, protocol.parse_notice, notice(sha256=64 * " "), says="sha256")


def test_garbage_is_refused_with_a_reason():
    raises(ValueError, protocol.parse_notice, b"\xff{", says="not JSON")
    raises(ValueError, protocol.parse_notice, "[1, 2]", says="not an object")
    raises(ValueError, protocol.parse_notice, '{"taskId": "1", "payload": {}}', says="taskId")
    raises(ValueError, protocol.parse_notice, '{"taskId": true, "payload": {}}', says="taskId")
    raises(ValueError, protocol.parse_notice, '{"taskId": 1}', says="payload")


def test_size_must_be_a_positive_int():
    for size in (0, -1, "1000", True, 1.5):
        raises(ValueError, protocol.parse_notice, notice(size=size), says="size")


def test_strings_must_be_strings():
    for key in ("version", "url", "token", "module"):
        raises(ValueError, protocol.parse_notice, notice(**{key: 5}), says=key)


def test_only_http_and_https_urls():
    raises(ValueError, protocol.parse_notice, notice(url="ftp://host/a/b"), says="http")
    equal(protocol.parse_notice(notice(url="http://host/a/b"))[1]["url"], "http://host/a/b")


def test_md5_must_be_32_hex_digits():
    for md5 in (MD5[:31], MD5 + "0", "g" * 32, None):
        raises(ValueError, protocol.parse_notice, notice(md5=md5), says="md5")


def test_download_address_of_the_guide():
    equal(protocol.download_url(URL, "device10001", "token"),
          "https://dmfile.ctwing.cn/file/upgrade?fileId=32128a6e8c3e15aea1c7&taskId=147589"
          "&deviceId=device10001&accessToken=token")


def test_download_address_drops_a_query_and_a_trailing_slash():
    equal(protocol.download_url("http://h:8080/f/u/F1/T2/?x=1", "d", "t"),
          "http://h:8080/f/u?fileId=F1&taskId=T2&deviceId=d&accessToken=t")


def test_download_address_encodes_values():
    got = protocol.download_url("http://h/u/F/T", "dev 1", "a+b/c=é")
    equal(got, "http://h/u?fileId=F&taskId=T&deviceId=dev%201&accessToken=a%2Bb%2Fc%3D%C3%A9")


def test_download_address_needs_file_and_task_segments():
    for url in ("http://host/", "http://host/only", "http://host"):
        raises(ValueError, protocol.download_url, url, "d", "t", says="fileId")


def test_quote_keeps_only_unreserved_characters():
    equal(protocol.quote("AZaz09-._~"), "AZaz09-._~")
    equal(protocol.quote("a b&c?"), "a%20b%26c%3F")


def test_message_is_the_spec_shape():
    got = json.loads(protocol.message(-1, {"version": "1.0.0", "module": "MCU"}))
    equal(got, {"taskId": -1, "params": {"version": "1.0.0", "module": "MCU"}})


def test_url_task_is_the_platform_task_id():
    equal(protocol.url_task(URL), "147589")
    equal(protocol.url_task(URL + "/?x=1"), "147589")
    equal(protocol.url_task("https://h/"), "?")


def test_chinese_descs_lead_the_english_reason():
    equal(protocol.describe(-2, "HTTP 404", "zh"), "固件下载失败: HTTP 404")
    equal(protocol.describe(-4, "full", "zh"), "固件写入失败: full")
    equal(protocol.describe(-2, "HTTP 404", "en"), "HTTP 404")
    equal(protocol.describe(50, "downloading", "zh"), "downloading")


def test_messages_with_non_ascii_are_valid_utf8_json():
    raw = protocol.message(3, {"version": "2.0.0-β", "desc": "固件下载失败"}).encode()
    equal(json.loads(raw.decode()), {"taskId": 3, "params": {"version": "2.0.0-β",
                                                              "desc": "固件下载失败"}})
