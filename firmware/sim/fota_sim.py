"""Device-side entry points of the simulation (run on the unix port in the flash folder).

    micropython -m fota_sim update BOARD SOURCE MD5 SIZE [SHA256] [--task N] [--lock-heap]
                                   [--no-readback] [--no-journal] [--ca FILE] [--insecure]
                                   [--trust DIGEST]... [--allow-unsigned]
    micropython -m fota_sim launch          (file slots: the boot-time slot choice)
    micropython -m fota_sim agent           (the board's main loop: config, MQTT agent)

Each command lives in its own module, so each loads only its own code.
"""
import sys


def main(argv):
    cmd = argv[0] if argv else ""
    if cmd == "update":
        import sim_update

        return sim_update.update(argv[1:])
    if cmd == "agent":
        import sim_agent

        return sim_agent.main()
    if cmd == "launch":
        from fota import statefile
        from fota.fileslot import launch

        cfg = statefile.load("fota_config.json") or {}
        print(launch("", cfg.get("max_trials", 3)))
        return 0
    print("usage: fota_sim update|launch|agent ...")
    return 2


sys.exit(main(sys.argv[1:]))
