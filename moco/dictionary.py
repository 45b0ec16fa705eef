"""Contrastive learning as a dictionary look-up (He et al., 2020, Sec. 3.1), on a trained checkpoint.

A query q = f_q(x_q) is matched against a dictionary of keys: the positive key k+ = f_k(x_k+), encoded
from another augmented view of the same image, and the K negative keys of the queue, encoded from other
images in earlier steps. InfoNCE is the (1+K)-way softmax classification loss of finding k+:
    l_pos = q . k+;  l_neg = q . queue                  # (1,) and (K,)
    loss = -log( exp(l_pos / T) / (exp(l_pos / T) + sum_i exp(l_neg_i / T)) )
The queue is FIFO: slot `ptr` holds the oldest key, slot `ptr - 1` the newest; each step enqueues the
batch's keys over the oldest ones. f_k is a momentum copy of f_q (theta_k <- m theta_k + (1 - m) theta_q),
so keys enqueued a few hundred steps apart still come from nearly the same encoder.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from moco.augment.presets import TwoCropsTransform, make_preset
from moco.checkpoint import load_checkpoint
from moco.config import MoCoConfig, TrainConfig
from moco.model import MoCo
from plumbing.errors import InputError

CHECKPOINT = "checkpoint.pt"
_VIEW_LOCK = threading.Lock()  # the augmentations draw from the global RNGs: one view pair at a time


@dataclass(frozen=True)
class LookUp:
    """One image looked up in the dictionary: the two views and the cosines of q with every key."""

    x_q: torch.Tensor  # (3, S, S) query view, normalised as the encoder sees it
    x_k: torch.Tensor  # (3, S, S) positive key view
    q: np.ndarray  # (C,) f_q(x_q), L2-normalised
    k_pos: np.ndarray  # (C,) f_k(x_k+), L2-normalised
    l_pos: float  # q . k+
    l_neg: np.ndarray  # (K,) q . queue[i], in queue-slot order


def info_nce(l_pos: float, l_neg: np.ndarray, T: float) -> tuple[float, float]:
    """(softmax probability of the positive among the 1+K keys, InfoNCE loss) at temperature T."""
    if T <= 0:
        raise ValueError(f"Illegal temperature {T}: must be positive")
    logits = np.concatenate([[l_pos], np.asarray(l_neg, dtype=np.float64)]) / T  # (1+K,)
    top = logits.max()
    log_z = top + np.log(np.exp(logits - top).sum())
    loss = float(log_z - logits[0])
    return float(np.exp(-loss)), loss


class Dictionary:
    """The queue and both encoders of a training checkpoint, in eval mode on the CPU."""

    def __init__(self, state: dict, path: Path) -> None:
        self.path = path
        self.train = TrainConfig.from_dict(state["config"])
        self.model = MoCo(MoCoConfig(**state["model_config"]))
        self.model.load_state_dict(state["model"])
        self.model.eval()
        self.step = int(state.get("step", 0))
        self.loss_history: list[list[float]] = list(state.get("loss_history", []))  # [step, loss] per step
        self.keys = self.model.queue  # (K, C)
        self.key_ids = self.model.queue_ids.numpy()  # (K,) image id per slot, -1 = never filled
        self.ptr = int(self.model.queue_ptr[0])  # slot of the oldest key, overwritten next
        files = state.get("image_files")
        self.image_files: tuple[str, ...] | None = None if files is None else tuple(files)
        self.image_root = Path(self.train.images)
        side = round(self.train.image_size * _cache_scale())
        self.side = side
        preset = make_preset(self.train.preset, self.train.image_size, self.train.crop_min_scale or None)
        self._two_crops = TwoCropsTransform(preset)

    @classmethod
    def load(cls, run_dir: Path) -> Dictionary | None:
        """The dictionary of `run_dir/checkpoint.pt`; None when the run has no checkpoint (an untrained encoder)."""
        path = Path(run_dir) / CHECKPOINT
        if not path.is_file():
            return None
        state = load_checkpoint(path)
        try:
            return cls(state, path)
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise InputError(f"{path}: cannot rebuild the model from this checkpoint ({type(e).__name__}: {e})") from e

    @property
    def K(self) -> int:
        return self.keys.shape[0]

    @property
    def m(self) -> float:
        return self.model.m

    @property
    def T(self) -> float:
        return self.model.T

    def fifo_order(self) -> np.ndarray:
        """(K,) queue slots from the oldest key to the newest."""
        return (self.ptr + np.arange(self.K)) % self.K

    def source(self, slot: int) -> Path | None:
        """The training image that key `slot` was encoded from; None for a slot never filled or unrecorded."""
        i = int(self.key_ids[slot])
        if i < 0 or self.image_files is None or i >= len(self.image_files):
            return None
        return self.image_root / self.image_files[i]

    def views(self, image: Image.Image, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """x_q, x_k+: two augmentations of `image` as training drew them (square at the cached side, then
        the run's preset), reproducible from `seed`."""
        square = image.convert("RGB").resize((self.side, self.side), Image.BICUBIC)
        with _VIEW_LOCK, torch.random.fork_rng(devices=[]):
            state = random.getstate()
            random.seed(seed)
            torch.manual_seed(seed)
            try:
                return self._two_crops(square)  # (3, S, S) each
            finally:
                random.setstate(state)

    @torch.no_grad()
    def look_up(self, image: Image.Image, seed: int) -> LookUp:
        x_q, x_k = self.views(image, seed)
        q = F.normalize(self.model.encoder_q(x_q[None]).float(), dim=1)[0]  # (C,)
        k = F.normalize(self.model.encoder_k(x_k[None]).float(), dim=1)[0]  # (C,)
        l_pos = float(torch.dot(q, k))
        l_neg = (self.keys.float() @ q).numpy()  # (K,)
        return LookUp(x_q, x_k, q.numpy(), k.numpy(), l_pos, l_neg)


def _cache_scale() -> float:
    from moco.train import CACHE_SCALE  # the training side the views were cropped from

    return CACHE_SCALE
