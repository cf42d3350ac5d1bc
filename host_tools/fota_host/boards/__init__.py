"""Real boards: the supported boards and their limits (`chips`), a device config checked on
the host (`fields`), build the device code (`build`), make a stock firmware OTA-ready
(`prepare`), deploy the code (`deploy`), write a board's config (`provision`), type-check
it against the port stubs (`typecheck`), a board's OTA partition layout (`layout`), one
update on a connected board (`hil`), development TLS certificates (`certs`)."""
