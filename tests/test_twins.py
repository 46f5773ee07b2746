"""The twin rule: every public sync method that does I/O has an async twin with the same
signature (CONTRIBUTING.md, "Sync and async").

The twin of ``x`` is ``x_async``, or an established name (``iter_chunks`` ->
``aiter_chunks``); a class of sync I/O can instead have a twin class (``ObjectReader`` ->
``AsyncObjectReader``) whose methods keep the sync names. Methods that do no I/O (building a
value, registering a backend in memory) need no twin and are listed in ``NO_IO``. The test
collects every mismatch before failing, so one run shows all of them.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from collections.abc import Callable
from types import ModuleType
from typing import Any

from storeroom import FileObject, StorageRegistry
from storeroom.backends import transfer
from storeroom.backends.base import StorageBackend
from storeroom.backends.fsspec import FSSpecBackend
from storeroom.backends.obstore import ObstoreBackend
from storeroom.orm import migration
from storeroom.readers import AsyncObjectReader, ObjectReader

#: Classes whose sync methods need ``x_async`` twins on the same class.
CLASSES: list[type] = [FileObject, StorageBackend, ObstoreBackend, FSSpecBackend, StorageRegistry]

#: Sync class -> its async twin class (same method names).
TWIN_CLASSES: dict[type, type] = {ObjectReader: AsyncObjectReader}

#: Modules whose public sync functions need ``x_async`` twins (upload sessions once they land).
MODULES: list[ModuleType] = [transfer, migration]
if importlib.util.find_spec("storeroom.uploads") is not None:
    MODULES.append(importlib.import_module("storeroom.uploads"))

#: Twin names that do not follow ``x`` -> ``x_async``.
ESTABLISHED = {"iter_chunks": "aiter_chunks", "iter_content": "aiter_content", "digest": "adigest"}

#: Public methods that do no I/O, so have no twin (class name -> method names).
NO_IO: dict[str, set[str]] = {
    "FileObject": {"assign_path", "set_content", "to_dict", "from_dict", "variant"},
    "StorageBackend": {"signs_natively", "copies_from"},
    "StorageRegistry": {
        "clear",
        "get_backend",
        "is_registered",
        "register_backend",
        "registered_backends",
        "set_default",
        "unregister_backend",
    },
    # io.RawIOBase's protocol, served from the same buffer logic as read().
    "ObjectReader": {"readable", "readall", "readinto", "seekable", "seek", "tell"},
    "storeroom.backends.transfer": {"algorithm_of", "new_hash"},
    "storeroom.orm.migration": {
        "default_concurrency",
        "plan_listing",
        "plan_rows",
        "plan_scan",
        "repoint",
    },
    "storeroom.uploads": {"enforced_limits"},
}


def _public_methods(cls: type) -> dict[str, Callable[..., Any]]:
    """Public functions defined by storeroom classes (and this test's) in ``cls``'s MRO."""
    found: dict[str, Callable[..., Any]] = {}
    for klass in reversed(cls.__mro__):
        if not klass.__module__.startswith(("storeroom", __name__)):
            continue
        for name, member in vars(klass).items():
            if name.startswith("_"):
                continue
            if isinstance(member, (staticmethod, classmethod)):
                member = member.__func__
            if inspect.isfunction(member):
                found[name] = member
    return found


def _is_async(func: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func):
        return True
    returns = str(inspect.signature(func).return_annotation)
    return returns.startswith(("AsyncIterator", "AsyncIterable", "AsyncGenerator"))


def _annotation(annotation: Any) -> str:
    # An async twin may take the async form of a stream (AsyncIterable for Iterable).
    text = str(annotation)
    for name in ("AsyncIterable", "AsyncIterator"):
        text = text.replace(name, name.removeprefix("Async"))
    return text


def _parameters(func: Callable[..., Any]) -> list[tuple[str, Any, Any, str]]:
    return [
        (p.name, p.kind, p.default, _annotation(p.annotation))
        for p in inspect.signature(func).parameters.values()
    ]


def _check(owner: str, functions: dict[str, Callable[..., Any]], no_io: set[str]) -> list[str]:
    """Each sync function of ``functions`` against its ``x_async`` twin among them."""
    problems = []
    async_names = {ESTABLISHED.get(n, f"{n}_async") for n in functions}
    for name, func in sorted(functions.items()):
        if _is_async(func) or name in async_names or name in no_io:
            continue
        twin_name = ESTABLISHED.get(name, f"{name}_async")
        twin = functions.get(twin_name)
        where = f"{owner}.{name}"
        if twin is None:
            problems.append(f"{where}: no async twin {twin_name}()")
        elif not _is_async(twin):
            problems.append(f"{where}: twin {twin_name}() is not async")
        elif _parameters(func) != _parameters(twin):
            problems.append(
                f"{where}{inspect.signature(func)} != {twin_name}{inspect.signature(twin)}"
            )
    return problems


def _mismatches() -> list[str]:
    problems: list[str] = []
    for cls in CLASSES:
        no_io = set().union(*(NO_IO.get(klass.__name__, set()) for klass in cls.__mro__))
        problems += _check(cls.__name__, _public_methods(cls), no_io)
    for module in MODULES:
        functions = {
            name: getattr(module, name)
            for name in module.__all__
            if inspect.isfunction(getattr(module, name))
        }
        problems += _check(module.__name__, functions, NO_IO.get(module.__name__, set()))
    for sync_cls, async_cls in TWIN_CLASSES.items():
        sync_methods = _public_methods(sync_cls)
        async_methods = _public_methods(async_cls)
        for name, func in sorted(sync_methods.items()):
            if name in NO_IO.get(sync_cls.__name__, set()):
                continue
            twin = async_methods.get(name)
            where = f"{sync_cls.__name__}.{name}"
            if twin is None or not _is_async(twin):
                problems.append(f"{where}: no async {async_cls.__name__}.{name}()")
            elif _parameters(func) != _parameters(twin):
                problems.append(
                    f"{where}{inspect.signature(func)} != "
                    f"{async_cls.__name__}.{name}{inspect.signature(twin)}"
                )
    return problems


def test_every_public_sync_method_has_an_async_twin_with_the_same_signature() -> None:
    problems = _mismatches()
    assert not problems, "twin rule broken:\n  " + "\n  ".join(problems)


def test_the_check_sees_a_missing_twin_and_a_different_signature() -> None:
    class Lopsided(StorageRegistry):
        def fetch(self, path: str, *, size: int = 1) -> bytes:
            return b""

        async def fetch_async(self, path: str, *, size: int = 2) -> bytes:
            return b""

        def purge(self) -> None:
            return None

    CLASSES.append(Lopsided)
    try:
        problems = _mismatches()
    finally:
        CLASSES.remove(Lopsided)
    assert any(p.startswith("Lopsided.fetch(") for p in problems)
    assert "Lopsided.purge: no async twin purge_async()" in problems
