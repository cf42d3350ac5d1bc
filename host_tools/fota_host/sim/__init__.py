"""Simulated boards on the MicroPython unix port: the flash and its bootloader (`flash`), one
update (`update`), a board rebooted like hardware (`device`), a fleet of them (`fleet`), a
board on a serial line (`board` + `ptyrelay`: `fota sim board`), faults on purpose
(`faults`), a test image server (`imageserver`), `make demo` (`demo` does it, `tour` shows
it), thousands of lightweight CPython devices for scale tests (`swarm`, `swarmdevice`,
`swarmshared`), and how device code is started on the unix port (`mprun`)."""
