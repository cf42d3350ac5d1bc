"""ESP32 trial records around the reboot into a new image (see esp32slot.py).

MicroPython exposes no "pending verify" state, so esp32slot's `switch()` writes a
trial record just before `set_boot()`; after the reset, running == record slot
means the new image is on trial, and running != record slot with the boot
partition back on the running one means the bootloader rolled back.
"""
from fota import journal
from fota.esp32slot import TRIAL


def boot_state(target):
    """('normal'|'pending'|'rolled_back', trial record or None)."""
    record = journal.load(TRIAL)
    if not record:
        return "normal", None
    if record.get("slot") == target.running_label:
        return "pending", record
    cls = target._cls
    if cls(cls.BOOT).info()[4] == record.get("slot"):
        return "normal", record          # switched, reset not done yet
    return "rolled_back", record


def note(reason):
    """Keep why the trial failed, for the report after the rollback."""
    record = journal.load(TRIAL)
    if record:
        record["reason"] = reason
        journal.save(TRIAL, record)


def confirm(partition_cls):
    partition_cls.mark_app_valid_cancel_rollback()
    journal.clear(TRIAL)
