# ESP32 boot.py: deliberately empty. main.py starts the OTA agent; keeping boot.py
# free of work means a broken application never stops the REPL or the agent.
