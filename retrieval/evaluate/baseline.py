"""`--compare`: the same folder indexed with a random-init encoder of the same architecture, input size and
preprocessing as the index's own, in a temporary folder removed afterwards."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from moco.export import read_spec, save_random_encoder
from plumbing.progress import Progress
from retrieval.searching.searcher import SearchIndex

# EncoderSpec fields the random-init encoder copies, so that only the weights differ
DESCRIPTOR_FIELDS = (
    "gem_p",
    "mean",
    "std",
    "flip_average",
    "resize",
    "grayscale",
    "standardize",
    "trim_borders",
    "straighten",
)
RANDOM_SEED = 0


@contextmanager
def random_init_index(index: SearchIndex, device: str = "auto", progress: Progress | None = None) -> Iterator[Path]:
    """The folder `index` was built from, indexed again (same index kind) with a random-init encoder of the
    same architecture, stem, width, input size and preprocessing; the encoder and the index folder (yielded)
    live in a temporary folder that is removed on exit."""
    from retrieval.indexing.run import IndexConfig, index_folder

    spec = read_spec(Path(index.manifest.encoder_path))
    with tempfile.TemporaryDirectory(prefix="retrieval-eval-") as tmp:
        encoder = Path(tmp) / "random-init"
        copied = {name: getattr(spec, name) for name in DESCRIPTOR_FIELDS}
        dim = spec.head_dim if spec.layer == "head" else 0
        save_random_encoder(
            encoder,
            spec.arch,
            spec.embed_size,
            dim=dim,
            seed=RANDOM_SEED,
            preprocessing=copied,
            stem=spec.stem,
            width=spec.width,
        )
        kind = index.manifest.kind
        index_folder(IndexConfig(index.root, encoder, Path(tmp) / "index", kind=kind, device=device, progress=progress))
        yield Path(tmp) / "index"
