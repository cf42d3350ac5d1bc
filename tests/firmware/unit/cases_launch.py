# fota.fileslot's launcher and boot pointer on the unix port: which slot boots, and why;
# a damaged pointer is said and kept for the agent's failure report.
import os

from checks import equal
from fota import fileslot, statefile


def _slots(*versions):
    for name in ("fota_boot.json", "fota_boot.json.tmp"):
        try:
            os.remove(name)
        except OSError:
            pass
    fileslot._rmtree("slots")
    for i, version in enumerate(versions):
        slot = "ab"[i]
        fileslot._makedirs("slots/" + slot)
        statefile.save(f"slots/{slot}/manifest.json", {"version": version})


def test_a_damaged_pointer_boots_a_slot_and_is_reported():
    _slots("1.0.0", "2.0.0")
    statefile.save("fota_boot.json", {"active": "b", "previous": "a", "confirmed": False,
                                      "trial": 0, "task": 9})
    with open("fota_boot.json") as f:
        text = f.read()
    with open("fota_boot.json", "w") as f:
        f.write(text.replace('"trial": 0', '"trial": 5'))
    equal(fileslot.launch("", 3), "slots/a")
    state, record = fileslot.FileSlot("").boot_state()
    equal((state, record["task"]), ("damaged", 9))
    equal(record["reason"], "boot pointer fota_boot.json is damaged (checksum mismatch): "
                            "booted slot a")
    slot = fileslot.FileSlot("")
    slot.forget()                                  # reported: the pointer is whole again
    equal(fileslot.FileSlot("").boot_state(), ("normal", None))
    equal(statefile.check("fota_boot.json")[1], None)


def test_an_unreadable_pointer_boots_the_slot_that_holds_an_app():
    _slots("1.0.0")
    os.rename("slots/a", "slots/b")               # only slot b holds an app
    with open("fota_boot.json", "w") as f:
        f.write("\xff\xfe garbage")
    equal(fileslot.launch("", 3), "slots/b")
    equal(fileslot.FileSlot("").boot_state()[1]["task"], -1)


def test_no_pointer_is_a_fresh_board_not_damage():
    _slots("1.0.0")
    equal(fileslot.launch("", 3), "slots/a")
    equal(fileslot.FileSlot("").boot_state(), ("normal", None))
