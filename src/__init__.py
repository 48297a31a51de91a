"""pfcon: a pfcon-compatible compute controller for ChRIS."""

from importlib.metadata import PackageNotFoundError, version

from ._lean import hidden

try:
    __version__ = version("pfcon")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"

with hidden(compiled=True):  # see _lean: what these two would load and we never use
    import dependency_injector.containers
    import dependency_injector.providers  # noqa: F401
    import structlog  # noqa: F401
