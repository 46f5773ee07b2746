"""The ``storeroom`` click group, what every command shares, and how errors are reported.

Every storeroom error, bad argument or unusable database URL ends the command with one line
on standard error, ``storeroom: error: ...``, and exit code 2; never a traceback. Commands
that find problems (``verify``) exit 1.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from storeroom.backends.base import StorageBackend
from storeroom.errors import StoreroomError
from storeroom.registry import StorageRegistry

__all__ = ["Context", "SectionedGroup", "cli", "fail", "main", "pass_context", "run_async"]

T = TypeVar("T")


@dataclass
class Context:
    """What every command gets: the backends, loaded once from --config or the environment."""

    config: Path | None
    _registry: StorageRegistry | None = field(default=None, repr=False)
    _specs: list[Any] = field(default_factory=list, repr=False)

    def _load(self) -> StorageRegistry:
        from storeroom import config

        if self.config is not None:
            if not self.config.is_file():
                fail(f"configuration file {str(self.config)!r} does not exist; pass an "
                     "existing TOML, JSON or YAML file to --config")
            specs = config.load_config_file(self.config)
        else:
            specs = config.specs_from_env()
        registry = StorageRegistry()
        config.register_specs(specs, registry)
        self._specs = list(specs)
        return registry

    @property
    def registry(self) -> StorageRegistry:
        """Backends from ``--config`` or, without it, the environment."""
        if self._registry is None:
            self._registry = self._load()
        return self._registry

    @property
    def specs(self) -> list[Any]:
        """The :class:`~storeroom.config.BackendSpec` values the backends were built from."""
        _ = self.registry
        return self._specs

    def backend(self, key: str) -> StorageBackend:
        """The backend registered under ``key`` (a clear error listing the others if none)."""
        registry = self.registry
        if key in registry:
            return registry.get_backend(key)
        source = f"in {str(self.config)!r}" if self.config else "in the environment"
        known = ", ".join(repr(b.key) for b in sorted(registry, key=lambda b: b.key))
        if not known:
            fail(f"backend {key!r} is not configured: no backends are configured {source}; "
                 "pass --config FILE or set STORAGE__<KEY>__URL")
        fail(f"backend {key!r} is not configured {source}; configured: {known}")


pass_context = click.make_pass_decorator(Context)


def fail(message: str) -> NoReturn:
    """Stop with a one-line error and exit code 2."""
    raise click.UsageError(message)


class SectionedGroup(click.Group):
    """A click group whose ``--help`` lists commands under headings.

    ``add_command(command, section="Objects")`` files a command under a heading; headings
    appear in the order first used, commands without one under "Other commands".
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sections: dict[str, list[str]] = {}

    def add_command(self, cmd: click.Command, name: str | None = None, *,
                    section: str | None = None) -> None:
        """Register ``cmd`` (under ``name``, default its own) in ``section``."""
        super().add_command(cmd, name)
        name = name or cmd.name or ""
        for names in self.sections.values():
            if name in names:
                names.remove(name)
        self.sections.setdefault(section or "Other commands", []).append(name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Write each section's commands with their short help."""
        width = formatter.width or 80
        limit = width - 6 - max((len(n) for n in self.commands), default=0)
        for section, names in self.sections.items():
            rows = [(n, self.commands[n].get_short_help_str(limit)) for n in names
                    if n in self.commands and not self.commands[n].hidden]
            if rows:
                with formatter.section(section):
                    formatter.write_dl(rows)


@click.group(
    cls=SectionedGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="Run 'storeroom COMMAND --help' for a command's options and examples.",
)
@click.option(
    "--config", "config_path", metavar="FILE",
    type=click.Path(path_type=Path, dir_okay=False), envvar="STOREROOM_CONFIG",
    help="TOML, JSON or YAML file with [[storage.backends]] [env: STOREROOM_CONFIG]. "
    "Default: backends from the environment (STORAGE__<KEY>__URL, STORAGE_BACKEND, ...).",
)
@click.version_option(package_name="storeroom")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None) -> None:
    """Inspect, copy and migrate the files kept by storeroom backends.

    Backends come from --config or from the environment, exactly as an application
    using storeroom.config reads them. Objects are named BACKEND:PATH (for example
    local:docs/report.pdf). Secrets are never printed.
    """
    ctx.obj = Context(config_path)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: errors become one line on stderr and exit code 2.

    Run as a program (``argv`` None), the process ends with ``os._exit`` once the output
    is flushed: obstore 0.12's runtime can abort the interpreter's shutdown after async
    calls (SIGABRT, exit code 134, in a good share of runs), which would turn a successful
    command into a crash. Called with ``argv`` it raises ``SystemExit`` as usual.
    """
    try:
        code = _run(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    if argv is not None:
        sys.exit(code)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _run(argv: list[str] | None) -> int:
    try:
        result = cli.main(args=argv, prog_name="storeroom", standalone_mode=False)
    except click.Abort:
        click.echo("storeroom: aborted", err=True)
        return 130
    except click.ClickException as exc:
        return _error(exc.format_message())
    except (StoreroomError, OSError) as exc:
        return _error(_first_line(exc))
    except Exception as exc:
        # The database layer's errors (bad URL, no such table, unmapped class) are usage
        # problems of this command, not bugs to show a traceback for.
        if type(exc).__module__.partition(".")[0] != "sqlalchemy":
            raise
        return _error(f"database: {_first_line(exc)}")
    return result if isinstance(result, int) else 0


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _error(message: str) -> int:
    click.echo(f"storeroom: error: {message}", err=True)
    return 2


def run_async(factory: Callable[[], Awaitable[T]]) -> T:
    """Run the coroutine ``factory()`` returns, from a (sync) command."""
    import asyncio

    async def runner() -> T:
        return await factory()

    return asyncio.run(runner())
