"""A module that is imported on its first use instead of when its importer is imported.

A node that hosts no shard has no use for Deep Lake, whose import costs about 45 MB of resident
memory per process (its native library, its threads) and about half a second: `shard.replica`
names it as `deeplake = lazy_import.module("deeplake")`, and the first attribute read (the first
shard opened or created) imports it. Later reads cost one Python-level attribute lookup.
`importlib.import_module` holds the module's import lock, so threads that race on the first read
import it once.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType


class LazyModule:
    """Stands for the module `name`; imports it on the first attribute read."""

    __slots__ = ("_name", "_module")

    def __init__(self, name: str):
        self._name = name
        self._module: ModuleType | None = sys.modules.get(name)

    def __getattr__(self, attr: str):
        module = self._module
        if module is None:
            module = self._module = importlib.import_module(self._name)
        return getattr(module, attr)

    @property
    def loaded(self) -> bool:
        """Whether the module has been imported (by this stand-in or by anyone else)."""
        return self._module is not None or self._name in sys.modules

    def __repr__(self) -> str:
        state = "loaded" if self.loaded else "not loaded yet"
        return f"<lazy module {self._name!r}, {state}>"


def module(name: str) -> LazyModule:
    """A stand-in for `import name` that imports `name` on its first attribute read."""
    return LazyModule(name)
