"""Package surfaces that import their modules on first use (PEP 562).

``klinestore.config`` imports every package's ``config`` module, and importing a submodule runs
its package's ``__init__``: a package that re-exported its surface eagerly made every command
pay for Polars, pyarrow.dataset, pandas and matplotlib before it parsed its arguments
(``import klinestore.config``: 463 ms eager, 48 ms lazy, measured with ``python -X importtime``).
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def lazy_exports(package: str, modules: Mapping[str, Iterable[str]]) -> tuple[Callable[[str], Any], list[str]]:
    """``(__getattr__, __all__)`` for ``package``, whose surface is ``modules``: module -> the
    names it exports. A module is relative to ``package`` unless it starts with ``klinestore.``;
    ``exported=attribute`` exports a module's attribute under another name. Call it from the
    package's ``__init__``."""
    where: dict[str, tuple[str, str]] = {}
    for module, names in modules.items():
        full = module if module.startswith("klinestore.") else f"{package}.{module}"
        for entry in names:
            exported, _, attribute = entry.partition("=")
            where[exported] = (full, attribute or exported)

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, attribute = where[name]
        value = getattr(importlib.import_module(module), attribute)
        setattr(sys.modules[package], name, value)  # the next lookup is a plain attribute
        return value

    class _Surface(types.ModuleType):
        """The package: a submodule named like an export (``queries.export``) does not replace the
        export as the package's attribute when it is imported, as an eager re-export would not."""

        def __setattr__(self, name: str, value: Any) -> None:
            if name in where and isinstance(value, types.ModuleType) and value.__name__ == f"{package}.{name}":
                return
            super().__setattr__(name, value)

    sys.modules[package].__class__ = _Surface
    return __getattr__, sorted(where)
