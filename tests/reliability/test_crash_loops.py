"""Issue 18: a few rounds of the crash consistency loops of tests/reliability/crash_loops.py (the long run kills 30+).
`retrieval index` killed at random moments: the index loads, holds the old or the new folder, catalog and
FAISS ids agree, the next run completes and leaves no debris. `retrieval dedup --apply` killed among its
moves: `undo` restores the tree byte for byte. (Kills of `write_generation` alone and of `train` checkpoint
writes are in tests/retrieval/indexing/test_generations.py and tests/moco/test_checkpoint.py.)"""

from __future__ import annotations

import pytest

from tests.reliability.crash_loops import dedup_kill_loop, index_kill_loop

pytestmark = pytest.mark.slow


def test_killed_index_runs_leave_the_old_or_the_new_generation(tmp_path):
    tally = index_kill_loop(tmp_path, kills=3, seed=1)
    assert not tally.failures, tally.failures
    assert sum(tally.outcomes.values()) == 3
    assert tally.kills >= 1, tally.outcomes  # at least one kill landed while it worked


def test_killed_dedup_apply_is_undone_byte_for_byte(tmp_path):
    tally = dedup_kill_loop(tmp_path, kills=3, seed=1)
    assert not tally.failures, tally.failures
    assert tally.kills >= 1, tally.outcomes  # at least one kill landed while it was moving
