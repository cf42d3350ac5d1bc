# fota.statefile on the unix port: damage is told apart from "no state".
from checks import equal
from fota import statefile


def test_saved_documents_read_back():
    statefile.save("s.json", {"active": "b", "task": 7, "v": "2.0.0-β"})
    equal(statefile.check("s.json"), ({"active": "b", "task": 7, "v": "2.0.0-β"}, None))
    equal(statefile.load("s.json")["task"], 7)


def test_absent_is_no_state_not_damage():
    equal(statefile.check("nothing-here.json"), (None, None))


def test_a_changed_byte_fails_the_checksum_but_the_task_is_still_seen():
    statefile.save("s.json", {"active": "b", "task": 7})
    with open("s.json") as f:
        text = f.read()
    with open("s.json", "w") as f:
        f.write(text.replace('"b"', '"a"'))
    data, why = statefile.check("s.json")
    equal((data["task"], why), (7, "checksum mismatch"))
    equal(statefile.load("s.json"), None)


def test_truncated_empty_or_garbage_are_damage():
    for content, why in (('{"crc": "00000000", "act', "unreadable"), ("", "empty"),
                         ("[1]", "not a JSON object")):
        with open("s.json", "w") as f:
            f.write(content)
        equal(statefile.check("s.json"), (None, why))


def test_a_document_without_a_checksum_is_taken_as_written():
    # written by an older firmware, or by a host tool
    with open("s.json", "w") as f:
        f.write('{"active": "a", "confirmed": true}')
    equal(statefile.check("s.json"), ({"active": "a", "confirmed": True}, None))
