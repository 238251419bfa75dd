"""Errors that the command line reports as a one-line message instead of a traceback."""

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the value and where it came from."""
