"""Errors raised by the search engine; all user-facing ones derive from moco's InputError."""

from __future__ import annotations

from plumbing.errors import FormatVersionError, InputError


class IndexError_(InputError):
    """An index on disk is missing, damaged or incompatible (message names the file)."""


class EncoderMismatchError(InputError):
    """An index was built with a different encoder than the one asked for."""


__all__ = ["InputError", "FormatVersionError", "IndexError_", "EncoderMismatchError"]
