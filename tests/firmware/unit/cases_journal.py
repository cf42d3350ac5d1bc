# fota.journal on the unix port: checkpoints written and read back through real files,
# and what survives a damaged or foreign journal.
from checks import equal
from fota import journal

PATH = "journal.bin"


def test_a_new_journal_has_no_checkpoint():
    log = journal.start(PATH, 1234)
    equal(journal.last(log), None)
    journal.close(log)
    log = journal.resume(PATH, 1234)
    equal(journal.last(log), None)
    journal.close(log)


def test_the_newest_checkpoint_comes_back():
    log = journal.start(PATH, 7)
    for blocks in range(1, 6):
        journal.save(log, blocks, 0xDEAD0000 + blocks)
    journal.close(log)
    log = journal.resume(PATH, 7)
    equal(journal.last(log), (5, 0xDEAD0005))
    journal.save(log, 6, 99)  # continues the sequence after a resume
    journal.close(log)
    log = journal.resume(PATH, 7)
    equal(journal.last(log), (6, 99))
    journal.close(log)


def test_file_layout_is_header_and_two_records():
    log = journal.start(PATH, 0x01020304)
    journal.save(log, 1, 11)
    journal.save(log, 2, 22)
    journal.close(log)
    with open(PATH, "rb") as f:
        data = f.read()
    equal(len(data), 48)
    equal(data[:8], b"FJ01\x04\x03\x02\x01")


def test_a_journal_of_another_update_is_ignored():
    journal.close(journal.start(PATH, 1))
    equal(journal.resume(PATH, 2), None)
    equal(journal.resume("missing.bin", 1), None)


def test_a_torn_record_falls_back_to_the_other():
    log = journal.start(PATH, 5)
    journal.save(log, 1, 111)  # record 2 (seq 1)
    journal.save(log, 2, 222)  # record 1 (seq 2)
    journal.close(log)
    with open(PATH, "r+b") as f:  # a power cut in the middle of rewriting record 1
        f.seek(16 + 6)
        f.write(b"\xff\xff")
    log = journal.resume(PATH, 5)
    equal(journal.last(log), (1, 111))
    journal.close(log)


def test_both_records_damaged_means_no_checkpoint():
    log = journal.start(PATH, 5)
    journal.save(log, 1, 1)
    journal.save(log, 2, 2)
    journal.close(log)
    with open(PATH, "r+b") as f:
        f.seek(16)
        f.write(b"\x13" * 32)
    log = journal.resume(PATH, 5)
    equal(journal.last(log), None)
    journal.close(log)


def test_remove_is_quiet_when_nothing_is_there():
    journal.close(journal.start(PATH, 1))
    journal.remove(PATH)
    journal.remove(PATH)
    equal(journal.resume(PATH, 1), None)
