"""Backend adapters: pure state machines, `decide(state) -> action`, one module per type.

Every adapter module satisfies `imagen.backends.contract.Backend`. The registry maps a type
name (what a config's `type = ...` says) to its module, imported on demand so start-up stays
fast; adding a backend touches only this table. Tests register their own adapters (the echo
adapter in tests/support) with `register`; the production registry holds only real backends.
"""

from __future__ import annotations

import importlib
from typing import cast

from imagen.backends.contract import Backend

_REGISTRY: dict[str, str] = {
    "replicate": "imagen.backends.replicate",
    "comfyui": "imagen.backends.comfyui",
}


def register(type_name: str, module: str) -> None:
    """Make `type = "<type_name>"` load the adapter module `module` (a dotted path)."""
    _REGISTRY[type_name] = module


def names() -> list[str]:
    """The registered type names, sorted (what a config may name)."""
    return sorted(_REGISTRY)


def load(type_name: str) -> Backend:
    try:
        path = _REGISTRY[type_name]
    except KeyError:
        raise ValueError(
            f"unknown backend type {type_name!r}; allowed: {', '.join(names())}"
        ) from None
    module = _LOADED.get(path)
    if module is None:  # imported on first use; looked up once (a fold asks once per job)
        module = _LOADED[path] = importlib.import_module(path)
    return cast(Backend, module)


_LOADED: dict[str, object] = {}
