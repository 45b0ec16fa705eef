"""Contrastive learning as a dictionary look-up (He et al., 2020, Sec. 3.1), on a trained checkpoint.

A query q = f_q(x_q) is matched against a dictionary of keys: the positive key k+ = f_k(x_k+), encoded
from another augmented view of the same image, and the K negative keys of the queue, encoded from other
images in earlier steps. InfoNCE is the (1+K)-way softmax classification loss of finding k+:
    l_pos = q . k+;  l_neg = q . queue                  # (1,) and (K,)
    loss = -log( exp(l_pos / T) / (exp(l_pos / T) + sum_i exp(l_neg_i / T)) )
The queue is FIFO: slot `ptr` holds the oldest key, slot `ptr - 1` the newest; each step enqueues the
batch's keys over the oldest ones. f_k is a momentum copy of f_q (theta_k <- m theta_k + (1 - m) theta_q),
so keys enqueued a few hundred steps apart still come from nearly the same encoder.

The paper's look-up picture is `rank_keys`: all 1 + K keys ranked by logit, k+ among them with its rank. A key
in the queue encoded earlier from the query's own picture (same source id) is a stale copy of the positive that
InfoNCE counts as a negative; the ranking marks it, with the reason. The training pictures behind the keys are
found from any working directory (`resolve_image_root`).
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from moco.augment.presets import TwoCropsTransform, make_preset
from moco.checkpoint import IMAGE_ROOT, load_checkpoint
from moco.config import MoCoConfig, TrainConfig
from moco.model import MoCo
from plumbing.errors import InputError
from plumbing.hashing import content_hash

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

    def __init__(self, state: dict, path: Path, index_root: Path | None = None) -> None:
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
        found = resolve_image_root(self.train.images, state.get(IMAGE_ROOT), self.image_files, path.parent, index_root)
        self.image_root: Path | None = found.root  # None: the pictures are not where the run left them
        self.images_missing: str | None = found.missing  # why keys show no pictures, for the person
        self._ids_by_name = {name: i for i, name in enumerate(self.image_files or ())}
        self._sizes: dict[int, list[int]] | None = None  # file size -> source ids, built on the first match
        side = round(self.train.crop_size * _cache_scale())
        self.side = side
        preset = make_preset(self.train.preset, self.train.crop_size, self.train.crop_min_scale or None)
        self._two_crops = TwoCropsTransform(preset)

    @classmethod
    def load(cls, run_dir: Path, index_root: Path | None = None) -> Dictionary | None:
        """The dictionary of `run_dir/checkpoint.pt`; None when the run has no checkpoint (an untrained encoder).
        `index_root`, the folder an index was built from, is one more place to look for the training pictures."""
        path = Path(run_dir) / CHECKPOINT
        if not path.is_file():
            return None
        state = load_checkpoint(path)
        try:
            return cls(state, path, index_root)
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

    def source_name(self, slot: int) -> str | None:
        """The training image of key `slot`, relative to the training folder; None for a slot never filled or
        unrecorded."""
        i = int(self.key_ids[slot])
        if i < 0 or self.image_files is None or i >= len(self.image_files):
            return None
        return self.image_files[i]

    def source(self, slot: int) -> Path | None:
        """The training image file that key `slot` was encoded from; None for a slot never filled or unrecorded,
        or when the training pictures cannot be found (`images_missing` says why)."""
        name = self.source_name(slot)
        if name is None or self.image_root is None:
            return None
        return self.image_root / name

    def source_id(self, path: Path) -> int | None:
        """The training image id (a value of `key_ids`) of the picture in `path`: the training file itself, or
        a file with the same bytes (an upload of it); None when it was not among the training images."""
        if self.image_files is None:
            return None
        path = Path(path)
        if self.image_root is not None:
            try:
                rel = path.resolve().relative_to(self.image_root.resolve()).as_posix()
            except (ValueError, OSError):
                rel = None
            if rel is not None and rel in self._ids_by_name:
                return self._ids_by_name[rel]
            try:
                size = path.stat().st_size
            except OSError:
                return None
            same_size = self._ids_by_size().get(size, [])
            if same_size:
                digest = content_hash(path)
                for i in same_size:
                    try:
                        if content_hash(self.image_root / self.image_files[i]) == digest:
                            return i
                    except OSError:
                        continue
        return None

    def _ids_by_size(self) -> dict[int, list[int]]:
        if self._sizes is None:
            sizes: dict[int, list[int]] = {}
            for i, name in enumerate(self.image_files or ()):
                try:
                    sizes.setdefault((self.image_root / name).stat().st_size, []).append(i)  # type: ignore[operator]
                except OSError:
                    continue
            self._sizes = sizes
        return self._sizes

    def age(self, slot: int) -> str:
        """Where key `slot` stands in the FIFO queue: "oldest", "newest" or e.g. "21st oldest"."""
        position = int(np.flatnonzero(self.fifo_order() == slot)[0])  # 0 = oldest
        return age_label(position, self.K)

    def ranked_keys(self, r: LookUp, T: float | None = None, source_id: int | None = None) -> KeyRanking:
        """The 1 + K keys of look-up `r` ranked by logit at temperature T (the run's by default); with the
        query picture's training id `source_id`, its own earlier keys in the queue are marked stale."""
        return rank_keys(r.l_pos, r.l_neg, self.T if T is None else T, self.key_ids, source_id)

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


@dataclass(frozen=True)
class RankedKey:
    """One of the 1 + K keys of a look-up, by its logit against q."""

    rank: int  # 1 = the highest logit
    slot: int | None  # queue slot; None for the positive key k+
    cosine: float  # q . key
    logit: float  # cosine / T
    probability: float  # softmax over the 1 + K logits
    source_id: int | None  # training image the key came from (queue id); None for k+ and unrecorded keys
    stale_self: bool = False  # an earlier key of the query's own picture: a negative that shows the same image
    reason: str = ""  # why the key is marked, for the person

    @property
    def positive(self) -> bool:
        return self.slot is None


@dataclass(frozen=True)
class KeyRanking:
    """The paper's look-up picture: every key of the dictionary ranked, k+ among them."""

    keys: tuple[RankedKey, ...]  # 1 + K, best first
    positive_rank: int  # rank of k+ (1 = the look-up succeeds)
    stale_self_slots: tuple[int, ...]  # queue slots holding earlier keys of the query's own picture


STALE_SELF_REASON = (
    "an earlier key of this same picture (training image {id}), enqueued from other random views by the key"
    " encoder of a few steps ago; InfoNCE counts it as a negative although it shows the query's own image"
)


def rank_keys(
    l_pos: float, l_neg: np.ndarray, T: float, key_ids: Sequence[int] | np.ndarray, source_id: int | None = None
) -> KeyRanking:
    """Rank k+ (cosine `l_pos`) and the K queue keys (cosines `l_neg`, in slot order, from images `key_ids`)
    by logit, highest first; ties keep k+ first, then slot order. Keys from the picture `source_id` (the
    query's own training image, if it is one) are marked stale, with the reason."""
    if T <= 0:
        raise ValueError(f"Illegal temperature {T}: must be positive")
    l_neg = np.asarray(l_neg, dtype=np.float64)  # (K,)
    ids = np.asarray(key_ids, dtype=np.int64)  # (K,)
    if ids.shape != l_neg.shape:
        raise ValueError(f"{ids.size} key ids for {l_neg.size} keys")
    logits = np.concatenate([[l_pos], l_neg]) / T  # (1+K,)
    p = np.exp(logits - logits.max())
    p /= p.sum()  # (1+K,)
    order = np.argsort(-logits, kind="stable")  # (1+K,) 0 = k+, j = slot j-1
    keys, stale = [], []
    for rank, j in enumerate(order.tolist(), 1):
        if j == 0:
            keys.append(RankedKey(rank, None, float(l_pos), float(logits[0]), float(p[0]), None))
            continue
        slot, sid = j - 1, int(ids[j - 1])
        own = source_id is not None and sid == source_id
        if own:
            stale.append(slot)
        reason = STALE_SELF_REASON.format(id=sid) if own else ""
        keys.append(
            RankedKey(
                rank, slot, float(l_neg[slot]), float(logits[j]), float(p[j]), sid if sid >= 0 else None, own, reason
            )
        )
    positive_rank = int(np.flatnonzero(order == 0)[0]) + 1
    return KeyRanking(tuple(keys), positive_rank, tuple(sorted(stale)))


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th, ..., 11th, 12th, 13th, 21st, 22nd, 101st, 111th."""
    if n % 100 in (11, 12, 13):
        return f"{n}th"
    return f"{n}{ {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th') }"


def age_label(position: int, K: int) -> str:
    """A queue position (0 = the oldest key of K) in words: "oldest", "newest", "21st oldest"."""
    if position == 0:
        return "oldest"
    if position == K - 1:
        return "newest"
    return f"{ordinal(position + 1)} oldest"


@dataclass(frozen=True)
class ImageRoot:
    root: Path | None  # where the training pictures are now; None when not found
    missing: str | None  # why not, for the person


def resolve_image_root(
    images: str,
    recorded: str | None,
    image_files: Sequence[str] | None,
    run_dir: Path,
    index_root: Path | None = None,
) -> ImageRoot:
    """Where the training pictures of a checkpoint are now, from any working directory.

    `recorded` is the absolute folder a checkpoint records (`moco.checkpoint.IMAGE_ROOT`); older checkpoints
    only have `images` as the person typed it, often relative to where `retrieval train` ran. Tried in turn:
    the recorded folder, `images` if absolute, the index's root (`index_root`, when the index was built from
    the same folder), then a relative `images` against the working directory, the run folder's project
    (`runs/NAME` -> `.`) and the run folder. A folder counts when it holds the recorded image files."""
    stored = Path(images).expanduser() if images else None
    candidates: list[Path] = []
    if recorded:
        candidates.append(Path(recorded))
    if stored is not None and stored.is_absolute():
        candidates.append(stored)
    if index_root is not None:
        candidates.append(Path(index_root))
        if stored is not None and not stored.is_absolute():
            candidates += [Path(index_root) / stored, Path(index_root).parent / stored]
    if stored is not None and not stored.is_absolute():
        run_dir = Path(run_dir).absolute()
        candidates += [Path.cwd() / stored, run_dir.parent.parent / stored, run_dir.parent / stored, run_dir / stored]
    seen: set[str] = set()
    for c in candidates:
        key = os.path.normpath(str(c.absolute()))
        if key in seen:
            continue
        seen.add(key)
        if _holds(c, image_files):
            return ImageRoot(Path(key), None)
    where = recorded or images or "(not recorded)"
    return ImageRoot(
        None,
        f"the training pictures are no longer in {where} (looked there, in the index's folder and beside the"
        " run): the keys are shown without their pictures; put the folder back or train again",
    )


def _holds(folder: Path, image_files: Sequence[str] | None, probes: int = 3) -> bool:
    """Whether `folder` holds the training pictures: a few recorded files spread over the list exist in it."""
    if not folder.is_dir():
        return False
    if not image_files:
        return True
    picks = {image_files[round(i * (len(image_files) - 1) / max(1, probes - 1))] for i in range(probes)}
    return 2 * sum((folder / name).is_file() for name in picks) >= len(picks)  # a few deleted since: still it


def _cache_scale() -> float:
    from moco.data import CACHE_SCALE  # the training side the views were cropped from

    return CACHE_SCALE
