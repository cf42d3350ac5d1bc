"""Host tools for MicroPython FOTA over MQTT (CTWing protocol)."""

__version__ = "0.1.0"
