"""Stand-in for `network` on the unix port: Wi-Fi that is always there."""
STA_IF = 0
AP_IF = 1


class WLAN:
    def __init__(self, interface=STA_IF):
        self._active = False
        self._connected = False

    def active(self, state=None):
        if state is not None:
            self._active = bool(state)
        return self._active

    def connect(self, ssid=None, key=None):
        self._connected = self._active

    def isconnected(self):
        return self._connected

    def config(self, *args, **kwargs):
        return None

    def ifconfig(self):
        return ("127.0.0.1", "255.0.0.0", "127.0.0.1", "127.0.0.1")
