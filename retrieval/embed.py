"""Embedder: images -> L2-normalised float32 descriptors, with the preprocessing stored in encoder.json.

Query time and index time both go through this one class, so preprocessing can never drift.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from moco.devices import autocast, resolve_device, uses_channels_last
from moco.export import EncoderSpec, ExportedEncoder, load_encoder


class Embedder:
    def __init__(self, module: ExportedEncoder, spec: EncoderSpec, device: torch.device) -> None:
        self.module = module
        self.spec = spec
        self.device = device
        self._transform = spec.preprocess()

    @staticmethod
    def load(encoder_dir: Path, device: str = "auto") -> Embedder:
        dev = resolve_device(device)
        module, spec = load_encoder(Path(encoder_dir), dev)
        if uses_channels_last(dev):
            module = module.to(memory_format=torch.channels_last)
        return Embedder(module, spec, dev)

    @property
    def dim(self) -> int:
        return self.spec.embedding_dim

    @property
    def sha256(self) -> str:
        """The descriptor's identity an index records: weights, plus non-default preprocessing."""
        return self.spec.identity

    @property
    def min_side(self) -> int:
        """Decode size to pass to `load_image`: the shorter side the eval transform resizes to."""
        return self.spec.embed_size

    def preprocess(self, img: Image.Image) -> torch.Tensor:
        return self._transform(img)  # (3, S, S)

    @torch.no_grad()
    def encode_tensors(self, x: torch.Tensor) -> np.ndarray:
        """(N, 3, S, S) preprocessed batch -> (N, dim) float32, L2-normalised."""
        x = x.to(self.device, non_blocking=True)
        if uses_channels_last(self.device):
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(self.device):
            if self.spec.flip_average:  # the pictures and their mirror images in one pass (half the calls)
                both = self.module(torch.cat([x, torch.flip(x, dims=[3])])).float()  # (2N, dim)
                f = F.normalize(both[: len(x)], dim=1) + F.normalize(both[len(x) :], dim=1)
            else:
                f = self.module(x).float()  # (N, dim)
        return F.normalize(f, dim=1).cpu().numpy().astype(np.float32)

    def encode(self, images: Sequence[Image.Image], batch_size: int = 64) -> np.ndarray:
        out = [
            self.encode_tensors(torch.stack([self.preprocess(im) for im in images[i : i + batch_size]]))
            for i in range(0, len(images), batch_size)
        ]
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)
