"""Errors that reach the user as one clear line instead of a traceback."""

from __future__ import annotations


class CloudinvError(Exception):
    """An error whose message tells the user what went wrong and what to do.

    The command line prints ``str(error)`` and exits with ``exit_code``; no traceback.
    """

    exit_code: int = 1


class ConfigError(CloudinvError):
    """The configuration (file, environment or flags) holds a value cloudinv cannot use."""

    exit_code = 2


class RuntimeStartError(CloudinvError):
    """A component of the runtime (broker, simulated AWS, worker, API) could not start."""

    exit_code = 3
