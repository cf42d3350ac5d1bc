# Freeze the fota package into a custom MicroPython firmware (saves the RAM that
# importing .mpy from the filesystem costs). Include it from the board's manifest:
#
#   # my_manifest.py, built with: make BOARD=ESP32_GENERIC BOARD_VARIANT=OTA \
#   #                                   FROZEN_MANIFEST=/abs/path/my_manifest.py
#   include("$(PORT_DIR)/boards/manifest.py")         # the board's usual frozen modules
#   include("/abs/path/to/repo/firmware/manifest.py")  # ESP32: umqtt.simple is frozen already
#
#   # Pico W (rp2 port, BOARD=RPI_PICO_W): its firmware has no umqtt, so ask for it:
#   include("$(BOARD_DIR)/manifest.py")
#   include("/abs/path/to/repo/firmware/manifest.py", umqtt=True)
#
# The board entry files (firmware/boards/<board>/main.py) stay on the filesystem.
options.defaults(umqtt=False)

metadata(description="MicroPython FOTA over MQTT (CTWing protocol): OTA engine and agent",
         version="0.1.0")

package("fota")

if options.umqtt:
    require("umqtt.simple")
