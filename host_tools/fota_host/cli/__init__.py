"""`fota`, the command line: the root group here, one module per command group (platform;
tasks: package/task/device; rollouts: task pause/resume/stop/approve/stats, device
tag/versions; variants: package add-delta/compress; watch: task watch; keys: keys and
sign; sim, simboard, simswarm; pack; boards), `output` for how it answers."""

from __future__ import annotations

import click

from . import boards, keys, pack, platform, rollouts, sim, simboard, tasks, variants


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fota-host")
def cli() -> None:
    """MicroPython FOTA over MQTT: platform, packaging, simulation and deploy tools."""


for _group in (pack, keys, sim, platform, tasks, rollouts, boards):
    for _command in _group.COMMANDS:
        cli.add_command(_command)
tasks.device_group.add_command(boards.provision_cmd)
sim.sim.add_command(simboard.board_cmd)
for _command in variants.PACKAGE_COMMANDS:
    tasks.package_group.add_command(_command)


def main() -> None:
    cli()
