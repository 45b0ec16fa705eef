"""The app's engine: the loaded index, its embedder and catalog, and (when the encoder was trained here) the
training checkpoint's dictionary, built once in `Engine.load` and shared by every handler and user."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw

from app.batching import QueryBatcher
from app.config import AppConfig
from moco.checkpoint import START_AFRESH
from moco.dictionary import Dictionary
from moco.measure.metrics_log import read_metrics
from plumbing.errors import InputError
from plumbing.images import UPLOAD_FORMATS, BadImageError, load_image
from retrieval.dedup.moves import check_move_target
from retrieval.dedup.run import DedupConfig, DedupResult, find_duplicates
from retrieval.dedup.threshold import Threshold
from retrieval.embed import Embedder
from retrieval.records import FileRecord
from retrieval.searching.searcher import Hit, SearchIndex

logger = logging.getLogger(__name__)

GONE = "That result is gone; search again."  # any file id the catalog does not have, however it came
NOT_SHOWN = "not shown: outside the indexed folder"
THUMB_CACHE = 4096  # thumbnails kept in memory (at 160 px about 75 KB each)
FILE_FORMAT = "webp"  # thumbnails and previews are encoded once, to a file the gallery serves as it is
_PLACEHOLDER = (224, 224, 224)


@dataclass
class Engine:
    cfg: AppConfig
    index: SearchIndex
    embedder: Embedder
    run_dir: Path  # the encoder folder (a training run, or an exported/random encoder)
    dictionary: Dictionary | None  # None: the encoder has no training checkpoint, or one the app will not use
    dictionary_off: str | None = None  # why a checkpoint beside the encoder is not used (None: none there)
    last_move_log: Path | None = None  # the undo log of the last move made from the app
    _thumbs: OrderedDict[tuple[str, int], Image.Image] = field(default_factory=OrderedDict, repr=False)
    _files: OrderedDict[tuple[str, int], str] = field(default_factory=OrderedDict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    batcher: QueryBatcher[torch.Tensor] = field(init=False, repr=False)  # queries waiting at once: one forward

    def __post_init__(self) -> None:
        self.batcher = QueryBatcher(lambda xs: self.embedder.encode_tensors(torch.stack(xs)))

    @classmethod
    def load(cls, cfg: AppConfig) -> Engine:
        """Open the index, its encoder (checked against it) and the run's checkpoint if there is one."""
        index = SearchIndex.open(Path(cfg.index))
        run_dir = Path(index.manifest.encoder_path)
        embedder = Embedder.load(run_dir, device=cfg.device)
        index.check_encoder(embedder)
        if cfg.move_to is not None:
            check_move_target(index.root, Path(cfg.move_to))  # InputError now, not at the first move
        dictionary, off = _dictionary(run_dir, index.root)
        logger.info(
            "app: %d files under %s, encoder %s%s",
            len(index),
            index.root,
            run_dir,
            "" if dictionary is not None else f" (no dictionary view: {off or 'no training checkpoint'})",
        )
        return cls(cfg, index, embedder, run_dir, dictionary, dictionary_off=off)

    @property
    def root(self) -> Path:
        return self.index.root

    # ------------------------------------------------------------------------------------ images

    def decode_upload(self, path: str | Path, min_side: int | None = None) -> Image.Image:
        """An uploaded file through the hardened loader, photo formats only; BadImageError names the file."""
        path = Path(path)
        try:
            return load_image(path, min_side=min_side or self.embedder.min_side, formats=UPLOAD_FORMATS)
        except BadImageError as e:
            raise BadImageError(Path(path.name), e.reason) from None  # the person's file name, not the cache path

    def record(self, file_id: object) -> FileRecord:
        """The catalog's record of `file_id`; InputError for anything that is not one of its ids."""
        if not isinstance(file_id, int) or isinstance(file_id, bool) or not 0 <= file_id < len(self.index):
            raise InputError(GONE)
        return self.index.records[file_id]

    def indexed_thumbnail(self, file_id: int) -> Image.Image:
        """The thumbnail of the indexed file `file_id` (see `_thumbnail_inside` for which files are read)."""
        rec = self.record(file_id)
        return self._thumbnail_inside(self.root, rec.path, rec)

    def training_thumbnail(self, root: Path, rel: str) -> Image.Image:
        """The thumbnail of a training image named by the run's checkpoint (relative to the run's images)."""
        return self._thumbnail_inside(Path(root), rel, None)

    def indexed_file(self, file_id: int, size: int | None = None) -> str:
        """The thumbnail of indexed file `file_id` (longest side `size`, default thumb_size) as an encoded file in
        gradio's cache folder, encoded once: a gallery given this path serves it as it is, with no re-encoding."""
        rec = self.record(file_id)
        return self._encoded(self._readable(self.root, rec.path, rec), size or self.cfg.thumb_size)

    def training_file(self, root: Path, rel: str) -> str:
        """`training_thumbnail` as an encoded file in gradio's cache folder (see `indexed_file`)."""
        return self._encoded(self._readable(Path(root), rel, None), self.cfg.thumb_size)

    def _thumbnail_inside(self, root: Path, rel: str, rec: FileRecord | None) -> Image.Image:
        path = self._readable(root, rel, rec)
        return self._thumbnail(path) if path is not None else placeholder(self.cfg.thumb_size, NOT_SHOWN)

    def _readable(self, root: Path, rel: str, rec: FileRecord | None) -> Path | None:
        """Only a file whose real path (symlinks followed) lies inside `root`, or, for an indexed file, one that
        is still the very file indexed (size and mtime as the catalog has them: a photo linked in from elsewhere
        when the index was built) is read; any other target is None (the NOT_SHOWN tile), whether or not it
        exists."""
        try:
            real = (root / rel).resolve()
            if real.is_relative_to(root.resolve()):
                return real  # a missing file or not an image: the loader's reason
            if rec is not None and _is_file_of(real, rec):
                return real
        except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL in the name
            pass
        logger.info("app: not showing %s: outside %s", rel, root)
        return None

    def _thumbnail(self, path: Path, size: int | None = None) -> Image.Image:
        """A downsized copy of an image file, in memory (a grey tile naming the problem if it cannot be read).
        Trusts `path`: handlers reach it only through `_readable`."""
        size = size or self.cfg.thumb_size
        key = (str(path), size)
        with self._lock:
            if key in self._thumbs:
                self._thumbs.move_to_end(key)
                return self._thumbs[key]
        im = _downsized(path, size)
        with self._lock:
            self._thumbs[key] = im
            while len(self._thumbs) > THUMB_CACHE:
                self._thumbs.popitem(last=False)
        return im

    def _encoded(self, path: Path | None, size: int) -> str:
        """`path` downsized to `size` and encoded once to a file in gradio's cache folder, under its bytes' hash
        and named as the file (the query panel's alt text); later calls touch the file (the cache sweep deletes
        files by age) and return its path."""
        key = (str(path), size)
        with self._lock:
            done = self._files.get(key)
            if done is not None:
                self._files.move_to_end(key)
        if done is not None:
            try:
                os.utime(done)
                return done
            except OSError:  # swept: encode it again
                pass
        im = placeholder(size, NOT_SHOWN) if path is None else _downsized(path, size)
        buf = io.BytesIO()
        im.convert("RGB").save(buf, FILE_FORMAT, quality=85)
        data = buf.getvalue()
        folder = _cache_folder()
        folder.mkdir(parents=True, exist_ok=True)
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem)[:60].strip("._") if path is not None else ""
        out = folder / hashlib.sha256(data).hexdigest()[:32] / f"{stem or 'picture'}.{FILE_FORMAT}"  # named as the file
        out.parent.mkdir(exist_ok=True)
        tmp = out.with_name(f".{out.name}.{threading.get_ident()}")
        tmp.write_bytes(data)
        os.replace(tmp, out)
        with self._lock:
            self._files[key] = str(out)
            while len(self._files) > THUMB_CACHE:
                self._files.popitem(last=False)
        return str(out)

    # ------------------------------------------------------------------------------------ search

    def search_image(self, image: Image.Image, k: int) -> list[Hit]:
        """The top-k for a decoded query image: preprocessed here, embedded with the other queries waiting then."""
        return self.index.search_vectors(self.batcher.embed(self.embedder.preprocess(image))[None], k)[0]

    def search_file(self, file_id: int, k: int) -> list[Hit]:
        """More like the indexed file `file_id`: its stored vector is the query; the file itself is left out."""
        own = self.record(file_id).id
        return self.index.search_vectors(self.index.vectors[own], k, [{own}])[0]

    # ------------------------------------------------------------------------------------ duplicates

    def duplicates(self, threshold: Threshold, similar: bool = False) -> DedupResult:
        """The duplicate groups at `threshold`; with `similar`, the similar pictures too (`DedupResult.similar`)."""
        cfg = DedupConfig(index=Path(self.cfg.index), threshold=threshold, similar=similar)
        return find_duplicates(cfg, index=self.index)

    # ------------------------------------------------------------------------------------ the run

    def metrics(self) -> list[dict[str, Any]]:
        """The run's metrics.jsonl records (empty without one); unreadable lines are skipped."""
        return read_metrics(self.run_dir)


def _dictionary(run_dir: Path, index_root: Path | None = None) -> tuple[Dictionary | None, str | None]:
    """The run's dictionary, or (None, why not) when its checkpoint cannot be used: search, duplicates and the
    index need no checkpoint, so the app starts with the dictionary tab off rather than not at all."""
    try:
        return Dictionary.load(run_dir, index_root), None  # the index's root: one more place for the pictures
    except InputError as e:
        why = str(e).removesuffix(f"; {START_AFRESH}")  # train's advice on resuming does not apply here
        return None, why


def _downsized(path: Path, size: int) -> Image.Image:
    try:
        im = load_image(path, min_side=size)
        im.thumbnail((size, size), Image.Resampling.LANCZOS)
        return im
    except BadImageError as e:
        return placeholder(size, e.reason)


def _cache_folder() -> Path:
    """Where the encoded thumbnails live: inside gradio's own upload cache, the one folder its file route serves
    (and its sweep cleans); nothing is served from anywhere else."""
    from gradio.utils import get_upload_folder

    return Path(get_upload_folder()) / "retrieval-thumbs"


def _is_file_of(path: Path, rec: FileRecord) -> bool:
    try:
        st = path.stat()
    except OSError:
        return False
    return (st.st_size, st.st_mtime_ns) == (rec.size, rec.mtime_ns)


def placeholder(size: int, text: str) -> Image.Image:
    im = Image.new("RGB", (size, size), _PLACEHOLDER)
    ImageDraw.Draw(im).multiline_text((6, size // 2 - 10), _wrap(text, 22), fill=(90, 90, 90))
    return im


def _wrap(text: str, width: int) -> str:
    words, lines, line = text.split(), [], ""
    for w in words:
        if line and len(line) + 1 + len(w) > width:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    lines.append(line)
    return "\n".join(lines[:4])
