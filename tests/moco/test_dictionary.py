"""moco.dictionary: InfoNCE of one query against the paper's Eq. 1 via the training loss; FIFO order; the training
pictures found from any directory; the 1 + K keys ranked; ordinals."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from moco.checkpoint import IMAGE_ROOT
from moco.dictionary import Dictionary, age_label, info_nce, ordinal, rank_keys
from moco.loss import info_nce_logits


@pytest.mark.parametrize("T", [0.05, 0.2, 2.0])
def test_info_nce_matches_the_training_loss(T):
    g = torch.Generator().manual_seed(0)
    q, k = (F.normalize(torch.randn(1, 16, generator=g, dtype=torch.float64), dim=1) for _ in range(2))
    queue = F.normalize(torch.randn(32, 16, generator=g, dtype=torch.float64), dim=1)
    logits = info_nce_logits(q, k, queue, T)  # (1, 1+K), as moco.train forms them
    expected = float(F.cross_entropy(logits, torch.zeros(1, dtype=torch.long)))  # the training loss
    p, loss = info_nce(float(q[0] @ k[0]), (queue @ q[0]).numpy(), T)
    assert loss == pytest.approx(expected, rel=1e-12)
    assert p == pytest.approx(np.exp(-expected), rel=1e-12)


def test_info_nce_is_stable_and_checks_T():
    p, loss = info_nce(1.0, np.full(4096, -1.0), 0.01)  # logits 100 and -100: no overflow
    assert p == pytest.approx(1.0) and loss == pytest.approx(4096 * np.exp(-200), abs=1e-80)
    assert info_nce(0.5, np.full(9, 0.5), 0.2)[0] == pytest.approx(0.1)  # all keys equal: chance, 1 / (1+K)
    with pytest.raises(ValueError, match="temperature"):
        info_nce(0.5, np.zeros(3), 0.0)


# ---------------------------------------------------------------------------------------- the training pictures


def _checkpoint(run_dir: Path, images: str, files: list[str], K: int = 8) -> None:
    """A checkpoint as `retrieval train` writes one, without training: a tiny model, queue ids 0..K-1."""
    from moco.checkpoint import save_checkpoint
    from moco.config import MoCoConfig, TrainConfig
    from moco.model import MoCo

    mcfg = MoCoConfig(arch="resnet18", dim=16, queue_size=K)
    torch.manual_seed(0)
    model = MoCo(mcfg)
    model.queue_ids[:] = torch.arange(K) % len(files)
    cfg = TrainConfig(images=images, out=str(run_dir), model=mcfg, crop_size=32)
    save_checkpoint(
        run_dir / "checkpoint.pt",
        {
            "config": cfg.to_dict(),
            "model_config": dataclasses.asdict(mcfg),
            "model": model.state_dict(),
            "step": 3,
            "image_files": files,
        },
    )


def _project(tmp_path: Path) -> tuple[Path, list[str]]:
    """tmp/project/samples/{a,b,c}.png and tmp/project/runs/samples/, as the demo lays them out."""
    project = tmp_path / "project"
    files = []
    for i, name in enumerate(("a.png", "b.png", "sub/c.png")):
        (project / "samples" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 40), (60 * i, 20, 200)).save(project / "samples" / name)
        files.append(name)
    (project / "runs" / "samples").mkdir(parents=True)
    return project, files


def test_new_checkpoints_find_their_pictures_from_another_directory(tmp_path, monkeypatch):
    project, files = _project(tmp_path)
    monkeypatch.chdir(project)
    _checkpoint(Path("runs/samples"), "samples", files)  # trained from the project folder, as typed: `samples`
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    d = Dictionary.load(project / "runs" / "samples")
    assert d.images_missing is None
    assert d.image_root == (project / "samples").resolve()
    assert d.source(2) == (project / "samples" / "sub" / "c.png").resolve()  # queue id 2 -> sub/c.png
    assert d.source(2).is_file()


def test_old_checkpoints_with_a_relative_folder_still_work(tmp_path, monkeypatch):
    project, files = _project(tmp_path)
    _checkpoint(project / "runs" / "samples", "samples", files)
    state = torch.load(project / "runs" / "samples" / "checkpoint.pt", weights_only=True)
    del state[IMAGE_ROOT]  # written before the absolute folder was recorded
    torch.save(state, project / "runs" / "samples" / "checkpoint.pt")
    monkeypatch.chdir(tmp_path)  # neither the project nor the run folder
    d = Dictionary.load(project / "runs" / "samples")
    assert d.images_missing is None and d.source(0) == project / "samples" / "a.png"
    # the run folder moved away from the pictures: the index's root still finds them
    moved = tmp_path / "moved-run"
    (project / "runs" / "samples").rename(moved)
    assert Dictionary.load(moved).images_missing is not None
    d = Dictionary.load(moved, index_root=project / "samples")
    assert d.images_missing is None and d.source(1) == project / "samples" / "b.png"


def test_moved_pictures_give_a_clear_message(tmp_path, monkeypatch):
    project, files = _project(tmp_path)
    monkeypatch.chdir(project)
    _checkpoint(Path("runs/samples"), "samples", files)
    (project / "samples").rename(project / "gone")
    d = Dictionary.load(project / "runs" / "samples")
    assert d.image_root is None and d.source(0) is None
    assert d.source_name(0) == "a.png"  # the name is still known
    assert str((project / "samples").resolve()) in d.images_missing and "no longer" in d.images_missing


def test_source_id_of_a_training_file_and_of_a_copy(tmp_path):
    project, files = _project(tmp_path)
    _checkpoint(project / "runs" / "samples", "samples", files)
    d = Dictionary.load(project / "runs" / "samples")
    assert d.source_id(project / "samples" / "sub" / "c.png") == 2
    upload = tmp_path / "upload.png"
    upload.write_bytes((project / "samples" / "b.png").read_bytes())  # the same bytes, elsewhere
    assert d.source_id(upload) == 1
    Image.new("RGB", (40, 40), (1, 2, 3)).save(upload)
    assert d.source_id(upload) is None


# ---------------------------------------------------------------------------------------- the ranked keys


def test_ranked_keys_equal_a_brute_force_sort_of_the_logits():
    rng = np.random.default_rng(0)
    K, T = 40, 0.07
    l_neg = rng.uniform(-1, 1, K).round(2)  # rounded: ties occur
    l_pos = float(l_neg[5])  # ties the positive with slot 5
    ids = rng.integers(-1, 10, K)
    r = rank_keys(l_pos, l_neg, T, ids, source_id=3)
    logits = [l_pos / T] + [x / T for x in l_neg]
    brute = sorted(range(K + 1), key=lambda j: (-logits[j], j))  # 0 = k+, j = slot j - 1
    assert [None if k.positive else k.slot + 1 for k in r.keys] == [None if j == 0 else j for j in brute]
    assert [k.rank for k in r.keys] == list(range(1, K + 2))
    assert r.positive_rank == brute.index(0) + 1 and r.keys[r.positive_rank - 1].positive
    assert sum(k.probability for k in r.keys) == pytest.approx(1.0)
    p_pos, _ = info_nce(l_pos, l_neg, T)
    assert r.keys[r.positive_rank - 1].probability == pytest.approx(p_pos)
    own = sorted(int(s) for s in np.flatnonzero(ids == 3))
    assert list(r.stale_self_slots) == own and own
    for k in r.keys:
        assert k.stale_self == (k.slot in own)
        assert ("same picture" in k.reason) == k.stale_self
    assert not any(k.stale_self for k in rank_keys(l_pos, l_neg, T, ids).keys)  # no source id: nothing marked


def test_ranked_keys_of_a_look_up(tmp_path):
    project, files = _project(tmp_path)
    _checkpoint(project / "runs" / "samples", "samples", files)
    d = Dictionary.load(project / "runs" / "samples")
    picture = Image.open(project / "samples" / "a.png")
    r = d.look_up(picture, seed=1)
    ranking = d.ranked_keys(r, source_id=d.source_id(project / "samples" / "a.png"))
    assert len(ranking.keys) == d.K + 1
    assert ranking.stale_self_slots == tuple(int(s) for s in np.flatnonzero(d.key_ids == 0))  # ids 0, 3, 6


@pytest.mark.parametrize(
    "n, text",
    [(1, "1st"), (2, "2nd"), (3, "3rd"), (4, "4th"), (11, "11th"), (12, "12th"), (13, "13th"), (21, "21st")]
    + [(22, "22nd"), (23, "23rd"), (101, "101st"), (111, "111th"), (112, "112th"), (1003, "1003rd")],
)
def test_ordinal(n, text):
    assert ordinal(n) == text


def test_age_label():
    assert [age_label(i, 30) for i in (0, 1, 20, 29)] == ["oldest", "2nd oldest", "21st oldest", "newest"]
