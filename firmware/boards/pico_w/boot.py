# Pico W boot.py: deliberately empty. main.py is the launcher (A/B app slots and the
# OTA agent); keeping boot.py free of work means mpremote can always reach the REPL.
