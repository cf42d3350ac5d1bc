"""ESP32 trial record around the reboot into a new image: the module run on every boot.

MicroPython exposes no "pending verify" state, so Esp32Slot.switch() writes a trial
record just before `set_boot()`; after the reset, running == record slot means the
new image is on trial, and running != record slot with the boot partition back on
the running one means the bootloader rolled back. This module imports only
fota.statefile (the slot imports it, never the other way round).
"""
from fota import statefile

TRIAL = "fota_trial.json"


def boot_state(running_label, boot_label):
    """('normal'|'pending'|'rolled_back'|'damaged', trial record or None), given the
    labels of the running partition and of the one selected for the next boot.

    'damaged': the record is there but unreadable or fails its checksum; its record
    is {"task": the task if it could still be read, else -1, "reason": what is wrong}.
    Nobody can tell then whether the running image is on trial: it must not be
    confirmed, nor reported as a success."""
    record, why = statefile.check(TRIAL)
    if why:
        task = record.get("task") if record else None
        return "damaged", {"task": task if isinstance(task, int) else -1,
                           "reason": "trial record %s is damaged (%s)" % (TRIAL, why)}
    if not record:
        return "normal", None
    if record.get("slot") == running_label:
        return "pending", record
    if boot_label == record.get("slot"):
        return "normal", record          # switched, reset not done yet
    return "rolled_back", record


def begin(record):
    """Write the record of a trial about to start (just before set_boot)."""
    statefile.save(TRIAL, record)


def pending(running_label):
    """True while the running image is a trial not confirmed yet."""
    record = statefile.load(TRIAL)
    return bool(record) and record.get("slot") == running_label


def note(reason):
    """Keep why the trial failed, for the report after the rollback."""
    record = statefile.load(TRIAL)
    if record:
        record["reason"] = reason
        statefile.save(TRIAL, record)


def confirm(partition_cls):
    partition_cls.mark_app_valid_cancel_rollback()
    statefile.clear(TRIAL)


def forget():
    statefile.clear(TRIAL)
