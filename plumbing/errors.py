"""Typed errors for bad user input. The CLI turns these into one line and exit code 2."""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator


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


class DiskFullError(InputError):
    """A write stopped because the device is full; what was on disk before the write is kept."""


_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_FULL_TEXT = ("no space left on device", "os error 28", "database or disk is full", "disk quota exceeded")


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc` says the device is full: an OSError, the error of a library that wraps its own writes
    (sqlite3, FAISS, safetensors), or one raised while handling such an error (torch.save's zip writer)."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _FULL_ERRNOS:
            return True
        if any(t in str(e).lower() for t in _FULL_TEXT):
            return True
        e = e.__cause__ or e.__context__
    return False


@contextlib.contextmanager
def disk_full_is(message: str) -> Iterator[None]:
    """Inside the block, an error that `is_disk_full` recognises becomes DiskFullError(`message`)."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        raise DiskFullError(message) from exc
