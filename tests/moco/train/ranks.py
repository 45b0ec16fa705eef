"""Two CPU ranks for the DDP tests: a free port for the rendezvous, and mp.spawn with a deadline."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

import pytest
import torch.multiprocessing as mp

WORLD = 2
DEADLINE_S = 240


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def join_env(rank: int, port: int) -> None:
    """The environment torchrun would give rank `rank` of WORLD."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank)
    )


def run_ranks(worker: Callable[..., None], *args: object) -> None:
    """worker(rank, port, *args) on WORLD processes; fails the test when they are not done by DEADLINE_S."""
    ctx = mp.spawn(worker, args=(free_port(), *args), nprocs=WORLD, join=False)
    deadline = time.monotonic() + DEADLINE_S
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
            pytest.fail(f"the {WORLD}-rank run did not finish within {DEADLINE_S} s (a rank waiting for the other?)")
