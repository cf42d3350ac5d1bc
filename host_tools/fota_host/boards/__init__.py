"""Real boards: build the device code (`build`), deploy it (`deploy`), write a board's config
(`provision`), type-check it against the port stubs (`typecheck`), one update on a
connected board (`hil`), development TLS certificates (`certs`)."""
