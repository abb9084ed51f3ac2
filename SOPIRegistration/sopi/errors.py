"""Errors raised for bad user input (files, fields, values)."""


class InputError(ValueError):
    """Bad input: the message names the file or field and what was expected.

    The command line turns it into a message on stderr and exit code 2.
    """


class NoVertebralColumn(InputError):
    """A CT in HU, with bone, in which the spine segmentation found no vertebral column."""


class Cancelled(RuntimeError):
    """Long work stopped because the caller's cancel flag was set (not an error)."""
