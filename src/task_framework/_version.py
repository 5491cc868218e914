"""The installed version of task-framework-py."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("task-framework-py")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

SDK_PROTOCOL_VERSION = 1
"""Version of the parent/worker message protocol (docs/reference/worker-protocol.md)."""
