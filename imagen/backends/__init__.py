"""Backend adapters: pure state machines, `decide(state) -> action`, one module per type.

Each module exposes `decide`, `CONFIG` (its configuration keys) and `DEFAULT_MODEL`.
Modules are imported by name on demand, so adding a backend touches only this table.
"""

from __future__ import annotations

import importlib
from types import ModuleType

BACKEND_TYPES: dict[str, str] = {
    "replicate": "imagen.backends.replicate",
    "comfyui": "imagen.backends.comfyui",
    "echo": "imagen.backends.echo",
}


def load(type_name: str) -> ModuleType:
    try:
        return importlib.import_module(BACKEND_TYPES[type_name])
    except KeyError:
        raise ValueError(
            f"unknown backend type {type_name!r}; allowed: {', '.join(sorted(BACKEND_TYPES))}"
        ) from None
