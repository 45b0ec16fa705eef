"""Typed errors for bad user input. The CLI turns these into one line and exit code 2."""

from __future__ import annotations


class InputError(Exception):
    """Bad input from the user (a file, folder or option). The message names the file and the reason."""


class FormatVersionError(InputError):
    """An artefact was written by a newer version of this program."""


class EncoderSpecError(InputError):
    """`encoder.json` is damaged or edited: one field is missing, of the wrong type or out of range."""

    def __init__(self, path: object, field: str, reason: str) -> None:
        super().__init__(f"{path}: field {field!r}: {reason}")
        self.path = path
        self.field = field
        self.reason = reason
