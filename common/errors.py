"""Errors that are the user's to fix: bad input files, bad configs.

Entry points turn these into one line on stderr and a non-zero exit; anything else is a bug and keeps its
traceback.
"""


class UserError(Exception):
    """Something in the user's input is wrong. The message is complete and fits on one line."""


class DataError(UserError):
    """A data file or record is unusable; the message starts with ``file:line:`` where there is one."""


class ConfigError(UserError):
    """A config value is wrong; the message starts with the key's dotted path."""
