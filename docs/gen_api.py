"""Generate docs/api.md from the docstrings of storeroom's public names.

python docs/gen_api.py          # rewrite docs/api.md
python docs/gen_api.py --check  # exit 1 if docs/api.md is out of date (the tests do this)
"""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path

MODULES = [
    "storeroom",
    "storeroom.backends.obstore",
    "storeroom.backends.fsspec",
    "storeroom.backends.base",
    "storeroom.config",
    "storeroom.orm",
    "storeroom.signing",
    "storeroom.web",
    "storeroom.events",
    "storeroom.retry",
    "storeroom.orm.migration",
    "storeroom.backends.transfer",
    "storeroom.testing",
    "storeroom.cors",
    "storeroom.backends.obstore.bucket_cors",
    "storeroom.backends.obstore.credentials",
    "storeroom.paths",
    "storeroom.contrib.litestar",
    "storeroom.contrib.fastapi",
    "storeroom.contrib.flask",
    "storeroom.contrib.otel",
    "storeroom.errors",
    "storeroom.uploads",
    "storeroom.media.sniff",
    "storeroom.media.validation",
    "storeroom.media.variants",
    "storeroom.jobs",
    "storeroom.jobs.saq",
    "storeroom.serialization",
    "storeroom.orm.alembic",
]
OUTPUT = Path(__file__).with_name("api.md")


def _doc(obj: object) -> str:
    return inspect.cleandoc(inspect.getdoc(obj) or "").split("\n\n", 1)[0].replace("\n", " ")


def _signature(obj: object) -> str:
    try:
        return str(inspect.signature(obj))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return ""


def missing_docstrings() -> list[str]:
    """Public names (and public methods of public classes) without a docstring."""
    missing = []
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            if not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue  # constants and type aliases are documented where they are defined
            if not inspect.getdoc(obj):
                missing.append(f"{module_name}.{name}")
            if inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    if attr.startswith("_") or not inspect.isfunction(member):
                        continue
                    if not member.__doc__ and not any(
                        getattr(base, attr, None) is not None
                        and getattr(getattr(base, attr), "__doc__", None)
                        for base in obj.__mro__[1:]
                    ):
                        missing.append(f"{module_name}.{name}.{attr}")
    return missing


def _own_members(cls: type) -> dict[str, object]:
    """The members a class defines or inherits from storeroom's own classes (not from libraries)."""
    members: dict[str, object] = {}
    for base in reversed(cls.__mro__):
        if base.__module__.startswith("storeroom"):
            members.update(vars(base))
    return members


def render() -> str:
    """The Markdown text of the API reference."""
    lines = [
        "# API reference",
        "",
        "Generated from docstrings by `docs/gen_api.py`; every name listed is public.",
        "",
    ]
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        names = list(getattr(module, "__all__", []))
        if not names:
            continue
        lines += [f"## `{module_name}`", "", _doc(module), ""]
        for name in names:
            obj = getattr(module, name)
            if inspect.ismodule(obj):
                continue
            if getattr(obj, "__module__", module_name) != module_name and module_name not in (
                "storeroom",
                "storeroom.config",
                "storeroom.orm",
                "storeroom.web",
            ):
                continue
            kind = "class" if inspect.isclass(obj) else "function" if callable(obj) else "value"
            signature = _signature(obj) if callable(obj) else ""
            lines.append(f"- **`{name}{signature}`** ({kind}): {_doc(obj) or '(constant)'}")
            if inspect.isclass(obj) and module_name != "storeroom.errors":
                for attr, member in sorted(_own_members(obj).items()):
                    if attr.startswith("_") or not (
                        inspect.isfunction(member) or isinstance(member, property)
                    ):
                        continue
                    target = member.fget if isinstance(member, property) else member
                    doc = _doc(target)
                    if doc:
                        lines.append(f"  - `{attr}`: {doc}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    text = render()
    if "--check" in sys.argv:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            raise SystemExit("docs/api.md is out of date: run python docs/gen_api.py")
        return
    OUTPUT.write_text(text)


if __name__ == "__main__":
    main()
