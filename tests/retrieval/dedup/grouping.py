"""`find_groups` as the tests call it: a threshold and keyword settings, cosine scores unless a background rank
is given (the library's default is normalised scores)."""

from __future__ import annotations

from typing import Any

import numpy as np

from retrieval.dedup.groups import Group, GroupingConfig, PairChecks, find_groups


def groups_of(
    records: Any,  # noqa: ANN401
    vectors: np.ndarray,
    threshold: float | None,
    *,
    verify: Any = None,  # noqa: ANN401
    geometry: Any = None,  # noqa: ANN401
    partners: Any = None,  # noqa: ANN401
    index: Any = None,  # noqa: ANN401
    root: Any = None,  # noqa: ANN401
    background_rank: int = 0,
    **settings: Any,  # noqa: ANN401
) -> list[Group]:
    config = GroupingConfig(threshold, background_rank=background_rank, **settings)
    checks = None if verify is None else PairChecks(verify, geometry, partners)
    return find_groups(records, vectors, config, index=index, root=root, checks=checks)
