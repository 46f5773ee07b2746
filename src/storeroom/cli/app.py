"""The ``storeroom`` click group, its shared options, and error handling."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import click

from storeroom.backends.base import StorageBackend
from storeroom.errors import StoreroomError
from storeroom.registry import StorageRegistry

__all__ = ["Context", "cli", "fail", "main", "pass_context"]


@dataclass
class Context:
    """What every command gets: the backends, loaded once from --config or the environment."""

    config: Path | None
    _registry: StorageRegistry | None = field(default=None, repr=False)

    @property
    def registry(self) -> StorageRegistry:
        """Backends from ``--config`` or, without it, the environment."""
        if self._registry is None:
            from storeroom import config

            registry = StorageRegistry()
            if self.config is not None:
                if not self.config.is_file():
                    fail(f"configuration file {str(self.config)!r} does not exist")
                config.configure_from_file(self.config, registry)
            else:
                config.configure_from_env(registry)
            self._registry = registry
        return self._registry

    def backend(self, key: str) -> StorageBackend:
        """The backend registered under ``key`` (a clear error listing the others if none)."""
        return self.registry.get_backend(key)


pass_context = click.make_pass_decorator(Context)


def fail(message: str) -> NoReturn:
    """Stop with a one-line error and exit code 2."""
    raise click.UsageError(message)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config", "config_path", type=click.Path(path_type=Path, dir_okay=False),
    envvar="STOREROOM_CONFIG",
    help="TOML, JSON or YAML file with [[storage.backends]]. Default: the environment "
    "(STORAGE__<KEY>__URL, STORAGE_BACKEND, ...).",
)
@click.version_option(package_name="storeroom")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None) -> None:
    """Inspect and move files kept by storeroom backends.

    Backends are read from --config or from the environment, exactly as applications
    using storeroom.config read them. Secrets are never printed.
    """
    ctx.obj = Context(config_path)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: storeroom errors become one line on stderr and exit code 2."""
    from storeroom.cli import commands  # noqa: F401 - registers the commands

    try:
        cli.main(args=argv, prog_name="storeroom", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("storeroom: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        _error(exc.format_message())
    except (StoreroomError, OSError) as exc:
        _error(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


def _error(message: str) -> NoReturn:
    click.echo(f"storeroom: error: {message}", err=True)
    sys.exit(2)


def run_async(factory: Callable[[], Any]) -> Any:
    """Run a coroutine from a command."""
    import asyncio

    return asyncio.run(factory())
