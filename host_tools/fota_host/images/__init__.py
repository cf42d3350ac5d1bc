"""Images for devices: ESP32 app images (`esp_image`, and the OTA check of a real one:
`esp32check`), app bundles for file slots (`bundle`), what an image says about itself
(`facts`), synthetic sim images (`synthetic`), compressed and delta containers (`delta`;
`releases`: MicroPython release binaries to test them on), Secure Boot V2 signing
(`signing`)."""
