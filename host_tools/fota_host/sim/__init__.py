"""Simulated boards on the MicroPython unix port: the flash and its bootloader (`flash`), one
update (`update`), a board rebooted like hardware (`device`), a fleet of them (`fleet`),
faults on purpose (`faults`), a test image server (`imageserver`), `make demo` (`demo`),
and how device code is started on the unix port (`mprun`)."""
