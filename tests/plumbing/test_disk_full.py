"""plumbing.errors.is_disk_full / disk_full_is: which errors mean a full device, and what the block turns them into.
(The real full disk, a tmpfs, is tests/reliability/test_full_disk.py, which needs root.)"""

from __future__ import annotations

import errno
import sqlite3

import pytest

from plumbing.errors import DiskFullError, InputError, disk_full_is, is_disk_full


def chained(outer: BaseException, inner: BaseException) -> BaseException:
    try:
        try:
            raise inner
        except BaseException:
            raise outer  # noqa: B904  (implicit chaining, as torch.save's zip writer does)
    except BaseException as e:  # noqa: BLE001
        return e


@pytest.mark.parametrize(
    "exc",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        OSError(errno.EDQUOT, "Disk quota exceeded"),
        OSError(errno.EFBIG, "File too large"),
        sqlite3.OperationalError("database or disk is full"),
        RuntimeError("safetensors: No space left on device (os error 28)"),
        chained(RuntimeError("[enforce fail at inline_container.cc:672] unexpected pos"), OSError(errno.ENOSPC, "x")),
    ],
)
def test_full_device_errors_are_recognised(exc):
    assert is_disk_full(exc)
    with pytest.raises(DiskFullError, match="^IDX: full$") as caught:
        with disk_full_is("IDX: full"):
            raise exc
    assert isinstance(caught.value, InputError) and caught.value.__cause__ is exc


@pytest.mark.parametrize(
    "exc",
    [OSError(errno.EACCES, "Permission denied"), ValueError("bad"), sqlite3.OperationalError("database is locked")],
)
def test_other_errors_pass_through_unchanged(exc):
    assert not is_disk_full(exc)
    with pytest.raises(type(exc)) as caught:
        with disk_full_is("IDX: full"):
            raise exc
    assert caught.value is exc


def test_a_disk_full_error_already_worded_is_kept():
    first = DiskFullError("MOVE: no space left on the device after 2 of 6 moves")
    with pytest.raises(DiskFullError) as caught:
        with disk_full_is("IDX: full"):
            raise first
    assert caught.value is first
