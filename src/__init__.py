"""pfcon: a pfcon-compatible compute controller for ChRIS."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pfcon")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"
