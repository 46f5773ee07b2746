"""The ``storeroom`` click group, what every command shares, and how errors are reported.

Every storeroom error, bad argument or unusable database URL ends the command with one line
on standard error, ``storeroom: error: ...``, and exit code 2; never a traceback. Commands
that find problems (``verify``) exit 1. ``storeroom`` alone prints the help on standard output
and exits 0. Output into a pipe that closes early (``storeroom ls s3 | head``) ends the
command quietly with exit code 0.
"""

from __future__ import annotations

import dataclasses
import functools
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

__all__ = [
    "Context",
    "SectionedGroup",
    "cli",
    "fail",
    "main",
    "pass_context",
    "pass_read_only_context",
    "run_async",
]

T = TypeVar("T")


@dataclass
class Context:
    """What every command gets: the backends, loaded once from --config or the environment.

    A command that only reads (``read_only``) builds just the backend it names and never
    creates anything: local-disk backends are opened without creating their folder.
    """

    config: Path | None
    read_only: bool = False
    _registry: StorageRegistry | None = field(default=None, repr=False)
    _specs: list[Any] | None = field(default=None, repr=False)
    _opened: dict[str, StorageBackend] = field(default_factory=dict, repr=False)

    @property
    def specs(self) -> list[Any]:
        """The :class:`~storeroom.config.BackendSpec` values of --config or the environment."""
        if self._specs is None:
            from storeroom import config

            if self.config is not None:
                if not self.config.is_file():
                    fail(
                        f"configuration file {str(self.config)!r} does not exist; pass an "
                        "existing TOML, JSON or YAML file to --config"
                    )
                self._specs = list(config.load_config_file(self.config))
            else:
                self._specs = list(config.specs_from_env())
        return self._specs

    @property
    def registry(self) -> StorageRegistry:
        """Backends from ``--config`` or, without it, the environment (all of them built)."""
        if self._registry is None:
            from storeroom import config

            registry = StorageRegistry()
            for backend in self._opened.values():
                registry.register_backend(backend)
            rest = [self._spec_to_build(s) for s in self.specs if s.key not in self._opened]
            config.register_specs(rest, registry)
            for spec in self.specs:
                if spec.default:
                    registry.register_backend(
                        registry.get_backend(spec.key), overwrite=True, default=True
                    )
            self._registry = registry
        return self._registry

    def _spec_to_build(self, spec: Any) -> Any:
        if not self.read_only or not _is_local(spec) or "mkdir" in spec.options:
            return spec
        return dataclasses.replace(spec, options={**spec.options, "mkdir": False})

    def check_key(self, key: str) -> None:
        """Stop with a clear error unless a backend ``key`` is configured (opens nothing)."""
        keys = sorted(spec.key for spec in self.specs)
        if key in keys:
            return
        source = f"in {str(self.config)!r}" if self.config else "in the environment"
        if not keys:
            fail(
                f"backend {key!r} is not configured: no backends are configured {source}; "
                "pass --config FILE or set STORAGE__<KEY>__URL"
            )
        fail(
            f"backend {key!r} is not configured {source}; configured: "
            f"{', '.join(repr(k) for k in keys)}"
        )

    def backend(self, key: str) -> StorageBackend:
        """The backend configured under ``key``, opened alone (an error listing the others).

        Only this backend is built: a command never creates the folders of local backends it
        does not use, and a read-only command not even the one it reads.
        """
        if self._registry is not None and key in self._registry:
            return self._registry.get_backend(key)
        if key not in self._opened:
            self.check_key(key)
            spec = next(s for s in self.specs if s.key == key)
            self._opened[key] = self._open(spec)
        return self._opened[key]

    def _open(self, spec: Any) -> StorageBackend:
        if self.read_only and _is_local(spec):
            folder = _local_folder(spec)
            if folder is not None and not folder.is_dir():
                fail(
                    f"backend {spec.key!r}: folder {str(folder)!r} does not exist "
                    "(nothing has been stored there yet)"
                )
        return self._spec_to_build(spec).build()  # type: ignore[no-any-return]


def _is_local(spec: Any) -> bool:
    return spec.kind == "local" or (spec.kind == "url" and str(spec.url).startswith("file:"))


def _local_folder(spec: Any) -> Path | None:
    from urllib.parse import unquote, urlsplit

    url = spec.location_url()
    if not url.startswith("file:"):
        return Path(url)
    parts = urlsplit(url)
    # file://./relative names a folder below the current directory.
    return Path(unquote(parts.netloc + parts.path)) if parts.netloc in ("", ".") else None


pass_context = click.make_pass_decorator(Context)

F = TypeVar("F", bound=Callable[..., Any])


def pass_read_only_context(func: F) -> F:
    """Like ``pass_context``, for commands that only read: they create nothing anywhere."""

    @pass_context
    def wrapper(ctx: Context, *args: Any, **kwargs: Any) -> Any:
        ctx.read_only = True
        return func(ctx, *args, **kwargs)

    return functools.update_wrapper(wrapper, func)  # type: ignore[return-value]


def fail(message: str) -> NoReturn:
    """Stop with a one-line error and exit code 2."""
    raise click.UsageError(message)


class PipeClosed(Exception):
    """The program reading the command's output closed the pipe (``storeroom ls | head``)."""


class SectionedGroup(click.Group):
    """A click group whose ``--help`` lists commands under headings.

    ``add_command(command, section="Objects")`` files a command under a heading; headings
    appear in the order first used, commands without one under "Other commands".
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sections: dict[str, list[str]] = {}

    def add_command(
        self, cmd: click.Command, name: str | None = None, *, section: str | None = None
    ) -> None:
        """Register ``cmd`` (under ``name``, default its own) in ``section``."""
        super().add_command(cmd, name)
        name = name or cmd.name or ""
        for names in self.sections.values():
            if name in names:
                names.remove(name)
        self.sections.setdefault(section or "Other commands", []).append(name)

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; a reader that closed our output pipe becomes :class:`PipeClosed`."""
        try:
            return super().invoke(ctx)
        except BrokenPipeError as exc:
            # click would turn it into exit code 1; the entry point ends quietly instead.
            raise PipeClosed from exc

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Write each section's commands with their short help."""
        width = formatter.width or 80
        limit = width - 6 - max((len(n) for n in self.commands), default=0)
        for section, names in self.sections.items():
            rows = [
                (n, self.commands[n].get_short_help_str(limit))
                for n in names
                if n in self.commands and not self.commands[n].hidden
            ]
            if rows:
                with formatter.section(section):
                    formatter.write_dl(rows)


@click.group(
    cls=SectionedGroup,
    invoke_without_command=True,
    subcommand_metavar="COMMAND [ARGS]...",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="Run 'storeroom COMMAND --help' for a command's options and examples.",
)
@click.option(
    "--config",
    "config_path",
    metavar="FILE",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="STOREROOM_CONFIG",
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
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())
        ctx.exit(0)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: errors become one line on stderr and exit code 2."""
    sys.exit(_run(argv))


def _run(argv: list[str] | None) -> int:
    try:
        try:
            result = cli.main(args=argv, prog_name="storeroom", standalone_mode=False)
            sys.stdout.flush()
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except (BrokenPipeError, PipeClosed):
        return _pipe_closed()
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


def _pipe_closed() -> int:
    """The reader of our output went away (``| head``): stop quietly, as a filter does."""
    # Python would flush stdout again at exit and report the broken pipe: point it at
    # /dev/null first, as the Python docs advise for SIGPIPE.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 0


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
