"""Where the commands are registered into the ``storeroom`` group, under help headings.

To add a command or a command group (``cors`` below is one, built in
:mod:`storeroom.cli.cors`), write it as a plain ``@click.command()`` / ``@click.group()``
in its own module and add one line here::

    cli.add_command(my_group, section="Security")

Commands can reach the backends of ``--config`` / the environment with
``@storeroom.cli.app.pass_context`` (``ctx.backend(key)``, ``ctx.registry``), and report a
bad argument with :func:`storeroom.cli.app.fail` (one line, exit code 2).
"""

from __future__ import annotations

from storeroom.cli.app import cli
from storeroom.cli.cors import cors
from storeroom.cli.maintenance import gc, verify
from storeroom.cli.migrate import migrate
from storeroom.cli.objects import backends, cp, get, ls, put, rm, sign, stat
from storeroom.cli.sharded import jobs

__all__ = ["cli"]

for _command in (backends, ls, stat, put, get, rm, cp, sign):
    cli.add_command(_command, section="Objects")
cli.add_command(migrate, section="Migration")
cli.add_command(verify, section="Rows and the store")
cli.add_command(gc, section="Rows and the store")
cli.add_command(jobs, section="Rows and the store")
cli.add_command(cors, section="Security")
