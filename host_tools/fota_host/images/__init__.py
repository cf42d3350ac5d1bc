"""Images for devices: ESP32 app images (`esp_image`, and the OTA check of a real one:
`esp32check`), app bundles for file slots (`bundle`), synthetic sim images (`synthetic`),
compressed and delta containers (`delta`), Secure Boot V2 signing (`signing`)."""
