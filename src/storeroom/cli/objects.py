"""The object commands: backends, ls, stat, put, get, rm, cp and sign."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import BinaryIO

import click

from storeroom.backends import transfer
from storeroom.backends.base import StorageBackend
from storeroom.cli.app import Context, fail, pass_context, pass_read_only_context
from storeroom.cli.formatting import human_size, print_table
from storeroom.errors import ObjectNotFound, SigningNotSupported
from storeroom.paths import safe_path

__all__ = ["backends", "cp", "get", "ls", "put", "rm", "sign", "stat"]

CHUNK = 1024 * 1024


def _target(ctx: Context, spec: str) -> tuple[StorageBackend, str]:
    key, sep, path = spec.partition(":")
    if not sep or not key or not path:
        fail(f"expected BACKEND:PATH (for example local:docs/report.pdf), got {spec!r}")
    safe_path(path)  # a bad path is reported before any backend is opened
    return ctx.backend(key), path


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the specs as JSON (secrets masked).")
@pass_read_only_context
def backends(ctx: Context, as_json: bool) -> None:
    """List the configured backends, secrets masked (nothing is opened or created).

    \b
    Examples:
      storeroom backends
      storeroom --config storage.toml backends --json
    """
    specs = {spec.key: spec for spec in ctx.specs}
    if not specs:
        fail("no backends configured: pass --config FILE or set STORAGE__<KEY>__URL")
    if as_json:
        click.echo(json.dumps([specs[k].masked() for k in sorted(specs)], indent=2, default=str))
        return
    defaults = [k for k, spec in specs.items() if spec.default]
    default = (
        defaults[-1]
        if defaults
        else (next(iter(specs)) if len(specs) == 1 else "default" if "default" in specs else None)
    )
    rows = []
    for key in sorted(specs):
        masked = specs[key].masked()
        options = ", ".join(f"{k}={v}" for k, v in sorted(masked.get("options", {}).items()))
        location = str(masked.get("url") or specs[key].location_url())
        kind = specs[key].kind
        if kind == "url":
            kind = location.partition("://")[0] if "://" in location else "path"
        rows.append((key, kind, location, "yes" if default == key else "", options))
    print_table(rows, ("key", "type", "location", "default", "options"))


@click.command("ls")
@click.argument("backend")
@click.argument("prefix", default="")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@pass_read_only_context
def ls(ctx: Context, backend: str, prefix: str, as_json: bool) -> None:
    """List the objects of BACKEND under PREFIX.

    \b
    Examples:
      storeroom ls local docs/
      storeroom ls s3 --json | jq .size
    """
    store = ctx.backend(backend)
    infos = sorted(store.list(prefix.rstrip("/")), key=lambda i: i.path)
    if as_json:
        for info in infos:
            click.echo(
                json.dumps(
                    {
                        "path": info.path,
                        "size": info.size,
                        "etag": info.etag,
                        "last_modified": info.last_modified.isoformat()
                        if info.last_modified
                        else None,
                    }
                )
            )
        return
    print_table(
        [(human_size(i.size), str(i.last_modified or "")[:19], i.path) for i in infos],
        ("size", "modified", "path"),
    )
    click.echo(f"{len(infos)} objects, {human_size(sum(i.size for i in infos))}")


@click.command()
@click.argument("target", metavar="BACKEND:PATH")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_read_only_context
def stat(ctx: Context, target: str, as_json: bool) -> None:
    """Show what the store knows about one object.

    Local-disk stores keep no content type or metadata (an application keeps them in its
    database rows); the other stores return what ``put`` recorded.
    """
    store, path = _target(ctx, target)
    info = store.head(path)
    fields = {
        "path": info.path,
        "size": info.size,
        "etag": info.etag,
        "version": info.version,
        "content_type": info.content_type,
        "last_modified": info.last_modified.isoformat() if info.last_modified else None,
        "metadata": dict(info.metadata),
    }
    if as_json:
        click.echo(json.dumps(fields, indent=2))
        return
    for name, value in fields.items():
        shown = "-" if value in (None, {}) else value
        if shown == "-" and name == "content_type" and store.location.startswith("file:"):
            shown = "- (local-disk stores keep no content type)"
        click.echo(f"{name.replace('_', ' '):<14} {shown}")


@click.command(short_help="Upload a file or standard input to BACKEND:PATH, streamed.")
@click.argument("target", metavar="BACKEND:PATH")
@click.argument("source", type=click.Path(allow_dash=True, dir_okay=False), required=False)
@click.option(
    "--content-type",
    help="Content type to store (default: guessed from PATH, "
    "else from SOURCE's name, else application/octet-stream).",
)
@pass_context
def put(ctx: Context, target: str, source: str | None, content_type: str | None) -> None:
    """Upload SOURCE (a file, or - for standard input) to BACKEND:PATH, streamed.

    Records the content type with the object (on stores that keep one: S3, GCS, Azure,
    memory) and prints the path, size, content type and checksum of what was stored (with the
    backend's digest: BLAKE3 unless its configuration sets checksum_algorithm).

    \b
    Examples:
      storeroom put local:docs/report.pdf report.pdf
      pg_dump app | storeroom put s3:backups/app.sql -
    """
    if source is None:
        fail(f"put {target} needs a SOURCE: a file to upload, or - to read standard input")
    store, path = _target(ctx, target)
    if source != "-" and not (os.path.isfile(source) and os.access(source, os.R_OK)):
        fail(f"cannot read {source!r}: no such readable file")
    stream: BinaryIO | Path = sys.stdin.buffer if source == "-" else Path(source)
    kind = content_type or _guess_type(path, source)
    result = store.put(path, stream, content_type=kind)
    click.echo(f"{path}  {human_size(result.size)}  {kind}  {result.checksum}")


def _guess_type(path: str, source: str) -> str:
    from storeroom.file import DEFAULT_CONTENT_TYPE, guess_content_type

    guessed = guess_content_type(path)
    if guessed == DEFAULT_CONTENT_TYPE and source != "-":
        guessed = guess_content_type(Path(source).name)
    return guessed


@click.command(short_help="Download BACKEND:PATH to a file or standard output, streamed.")
@click.argument("target", metavar="BACKEND:PATH")
@click.argument("destination", type=click.Path(allow_dash=True), default="-")
@pass_read_only_context
def get(ctx: Context, target: str, destination: str) -> None:
    """Download BACKEND:PATH to DESTINATION (a file, a directory, or - for stdout), streamed.

    A file is written under a temporary name and renamed when complete. A DESTINATION ending
    in / is a folder, created if needed; any other DESTINATION's folder must exist.
    """
    store, path = _target(ctx, target)
    chunks = store.stream(path, chunk_size=CHUNK)
    if destination == "-":
        for chunk in chunks:
            sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
        return
    final = Path(destination)
    if destination.endswith(("/", os.sep)):
        final.mkdir(parents=True, exist_ok=True)
    if final.is_dir():
        final = final / Path(path).name
    if not final.parent.is_dir():
        fail(
            f"cannot write {destination!r}: folder {str(final.parent)!r} does not exist "
            "(create it first)"
        )
    partial = final.with_name(final.name + ".part")
    try:
        with partial.open("wb") as out:
            for chunk in chunks:
                out.write(chunk)
        partial.replace(final)
    finally:
        partial.unlink(missing_ok=True)


@click.command(short_help="Delete BACKEND:PATH.")
@click.argument("target", metavar="BACKEND:PATH")
@click.option("-f", "--force", is_flag=True, help="No error when the object does not exist.")
@pass_context
def rm(ctx: Context, target: str, force: bool) -> None:
    """Delete BACKEND:PATH (an error if it does not exist, unless --force)."""
    store, path = _target(ctx, target)
    if not force and not store.exists(path):
        raise ObjectNotFound(f"object {path!r} does not exist in backend {store.key!r}")
    store.delete(path)


@click.command()
@click.argument("source", metavar="SRC_BACKEND:PATH")
@click.argument("destination", metavar="DST_BACKEND:PATH")
@click.option(
    "--read-back/--no-read-back",
    default=True,
    show_default=True,
    help="Read the copy back and check its size and checksum against the source's.",
)
@pass_context
def cp(ctx: Context, source: str, destination: str, read_back: bool) -> None:
    """Copy an object, within a backend or between backends (streamed), verified.

    Within one backend the store copies server-side; between backends the bytes stream
    through this process (never whole in memory), hashed on the way. The copy must have
    the source's size, and with --read-back (the default) it is read again and must hash
    to the same checksum; a copy that does not match is deleted and the command fails.

    \b
    Examples:
      storeroom cp local:docs/report.pdf s3:docs/report.pdf
      storeroom cp s3:big.iso s3:archive/big.iso --no-read-back
    """
    src, src_path = _target(ctx, source)
    dst, dst_path = _target(ctx, destination)
    info = src.head(src_path)
    copied = transfer.copy(
        src,
        src_path,
        dst,
        dst_path,
        size=info.size,
        content_type=info.content_type,
        chunk_size=CHUNK,
        verify_read=read_back,
    )
    how = "server-side" if copied.server_side else human_size(copied.size)
    click.echo(f"copied {source} -> {destination}  {how}  {copied.checksum or ''}".rstrip())


@click.command()
@click.argument("target", metavar="BACKEND:PATH")
@click.option(
    "--expires",
    default=3600,
    show_default=True,
    type=click.IntRange(min=1),
    help="Seconds the URL stays valid.",
)
@click.option("--upload", is_flag=True, help="Sign an upload (PUT) URL instead of a download.")
@click.option("--content-type", help="With --upload: the content type the upload must send.")
@pass_read_only_context
def sign(ctx: Context, target: str, expires: int, upload: bool, content_type: str | None) -> None:
    """Print a signed URL for BACKEND:PATH.

    S3, GCS and Azure backends sign natively. Local-disk and memory backends need an HMAC
    secret and the URL where the application serves storeroom's file handler:
    STORAGE__<KEY>__SIGNING_SECRET and STORAGE__<KEY>__SIGNING_BASE_URL in the environment,
    or signing_secret and signing_base_url in the --config file's backend table.

    \b
    Examples:
      storeroom sign s3:docs/report.pdf --expires 600
      storeroom sign s3:uploads/new.bin --upload
    """
    store, path = _target(ctx, target)
    try:
        url = store.sign(path, expires_in=expires, for_upload=upload, content_type=content_type)
    except SigningNotSupported:
        key = store.key.upper().replace("-", "_")
        where = (
            f"signing_secret and signing_base_url in the [[storage.backends]] table "
            f"of {str(ctx.config)!r}"
            if ctx.config
            else f"STORAGE__{key}__SIGNING_SECRET and STORAGE__{key}__SIGNING_BASE_URL"
        )
        fail(
            f"backend {store.key!r} ({store.location}) cannot sign URLs by itself; set "
            f"{where} (the URL where your application mounts storeroom's file handler); "
            "see docs/cli.md, 'Signed URLs'"
        )
    click.echo(url)
