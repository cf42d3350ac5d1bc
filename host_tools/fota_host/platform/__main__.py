"""`python -m fota_host.platform ...`: the same as `fota platform ...`."""

import sys

from fota_host.cli import cli

if __name__ == "__main__":
    cli(args=["platform", *sys.argv[1:]], prog_name="fota")
