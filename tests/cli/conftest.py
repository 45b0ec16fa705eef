"""The CLI's tests build on the library's fixtures (a tiny exported encoder, a folder of photos)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.retrieval.conftest import encoder, one_faiss_thread, one_thread, photos  # noqa: F401 (fixtures)


@pytest.fixture(scope="module", autouse=True)
def _cli_one_thread(one_thread) -> Iterator[None]:  # noqa: F811 (the fixture imported above)
    """Tiny models on one torch thread, as in the library's tests (the 2 cores are shared)."""
    yield
