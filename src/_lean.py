"""Keep optional integrations that libraries load whenever they are installed, for
features this server never uses, out of its memory.

structlog loads rich (its console renderer; our logs are JSON) and greenlet, dependency-injector
pydantic, PyYAML (its configuration loaders) and werkzeug (Flask), Litestar pydantic and attrs (their
plugins; our bodies are msgspec structs). Together they are about a sixth of the idle
server's memory (docs/performance.md). :func:`hidden` hides them only while those
libraries are imported or built: afterwards the modules are visible again (the Kubernetes
client imports pydantic for real).
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager

# What the libraries look for, and what they must find instead.
UNUSED: tuple[str, ...] = ("rich", "yaml", "pydantic", "attrs", "attr", "werkzeug", "greenlet")


@contextmanager
def hidden(names: tuple[str, ...] = UNUSED, compiled: bool = False) -> Iterator[None]:
    """Hide ``names`` (those not imported yet) from imports inside the block.

    A pure-Python ``import x`` of a module whose ``sys.modules`` entry is None raises
    ImportError, which is what the libraries handle. A compiled (Cython) module reads
    ``sys.modules`` itself and takes None for the module: with ``compiled``, pydantic is a
    stub whose version is not 1.x instead, which dependency-injector then ignores.
    """
    placed: dict[str, object] = {}
    for name in names:
        if name in sys.modules:
            continue
        value: object = None
        if compiled and name == "pydantic":
            stub = types.ModuleType(name)
            stub.VERSION = "0 (hidden)"  # type: ignore[attr-defined]
            value = stub
        sys.modules[name] = value  # type: ignore[assignment]
        placed[name] = value
    try:
        yield
    finally:
        for name, value in placed.items():
            if sys.modules.get(name, object()) is value:
                del sys.modules[name]
