"""MicroPython FOTA over MQTT: the device package."""
