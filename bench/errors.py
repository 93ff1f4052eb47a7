"""Errors the commands report as a message and exit code 2, not a traceback; torch-free."""


class DataError(ValueError):
    """Data that cannot be evaluated, with what to do about it."""
