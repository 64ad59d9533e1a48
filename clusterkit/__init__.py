"""clusterkit: one cluster out of many hosting servers."""

from importlib.metadata import PackageNotFoundError, version

from clusterkit.hookspecs import hookimpl

try:
    __version__ = version("clusterkit")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["hookimpl", "__version__"]
