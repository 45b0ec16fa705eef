"""`retrieval eval knn|dedup|pairs` end to end on a tiny planted labelled folder, indexed with the tiny
random encoder: three classes of two pictures, each an exact byte copy of the other, plus one lone picture
per class. A query's exact copy is its nearest neighbour (cosine 1), so the retrieval figures of the
copies are known exactly, whatever the random encoder makes of the rest."""

from __future__ import annotations

import csv
import io
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from cli.commands import eval as eval_cmd
from retrieval.indexing.run import index_folder
from tests import cli_runner
from tests.retrieval.conftest import index_cfg, make_image

pytestmark = pytest.mark.usefixtures("one_thread")
CLASSES = ("cat", "dog", "owl")


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    return cli_runner.run_cli(monkeypatch, capsys, eval_cmd.register, *args)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, encoder) -> dict[str, Path]:
    """cat/0.png + cat/0 copy.png (same bytes) + cat/lone.png, and so on for dog and owl; the index."""
    tmp = tmp_path_factory.mktemp("eval")
    root = tmp / "photos"
    for c, name in enumerate(CLASSES):
        make_image(root / name / "0.png", seed=10 * c)
        shutil.copyfile(root / name / "0.png", root / name / "0 copy.png")
        make_image(root / name / "lone.png", seed=10 * c + 1)
    index_folder(index_cfg(root, encoder, tmp))
    return {"root": root, "index": tmp / "idx", "tmp": tmp}


def test_knn_planted_copies_give_recall_one_and_the_json_schema(labelled, monkeypatch, capsys):
    code, out, err = run_cli(monkeypatch, capsys, "eval", "knn", "--index", str(labelled["index"]), "--format", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert set(doc) == set("format_version mode index root files unlabelled classes settings methods".split())
    assert doc["mode"] == "knn" and doc["files"] == 9 and doc["classes"] == list(CLASSES)
    assert doc["settings"] == {
        "k": 200,
        "k_used": 2,
        "temperature": 0.1,
        "recall_ks": [1, 5, 10],
        "precision_ks": [10],
    }
    (m,) = doc["methods"]
    assert set(m) == {"method", "overall", "per_class"} and m["method"] == "index"
    assert set(m["overall"]) == {"queries", "precision@10", "knn_top1", "map_at_r", "recall@1", "recall@5", "recall@10"}
    # oracle: the same figures straight from the definitions on the index's own vectors
    from retrieval.searching.searcher import SearchIndex

    idx = SearchIndex.open(labelled["index"])
    x, y = idx.vectors, np.array([CLASSES.index(r.path.split("/")[0]) for r in idx.records])
    sims = x @ x.T
    top1, rec1, rec5, mapr, p10 = [], [], [], [], []
    for q in range(len(x)):
        order = [j for j in np.argsort(-sims[q], kind="stable") if j != q]
        rel = np.array([y[j] == y[q] for j in order], dtype=float)
        votes = np.zeros(3)
        for j in order[:2]:  # k_used = 2: the smallest class (3 images) minus one
            votes[y[j]] += np.exp(sims[q, j] / 0.1)
        top1.append(float(votes.argmax() == y[q]))
        rec1.append(rel[0])
        rec5.append(rel[:5].max())
        p10.append(rel[:10].sum() / 8)  # 8 other files: the first page holds all of them, 2 class mates
        mapr.append(float((np.cumsum(rel[:2]) / np.arange(1, 3) * rel[:2]).sum() / 2))
    assert m["overall"]["queries"] == 9
    assert m["overall"]["knn_top1"] == pytest.approx(np.mean(top1))
    assert m["overall"]["recall@1"] == pytest.approx(np.mean(rec1))
    assert m["overall"]["map_at_r"] == pytest.approx(np.mean(mapr))
    assert m["overall"]["recall@5"] == pytest.approx(np.mean(rec5))
    assert m["overall"]["recall@10"] == 1.0  # only 8 other files: every class mate is in the top 10
    assert m["overall"]["precision@10"] == pytest.approx(np.mean(p10)) == pytest.approx(2 / 8)
    # a copy's nearest neighbour is its twin (cosine 1): at least the 6 copies are right at rank 1
    assert m["overall"]["recall@1"] >= 6 / 9
    for c in CLASSES:
        assert m["per_class"][c]["queries"] == 3
        assert m["per_class"][c]["recall@1"] >= 2 / 3


def test_knn_figures_do_not_depend_on_the_query_batch(labelled, monkeypatch):
    """Queries are scored in batches; every batch votes with the same k (a recall@k loop once reused the name and
    the second batch voted with k 10): batches of 2 give the figures of one batch."""
    from retrieval.evaluate import knn

    cfg = knn.KnnEvalConfig(index=labelled["index"], k=1, recall_ks=(1, 5), precision_ks=(3, 10))
    whole = knn.evaluate_knn(cfg)
    monkeypatch.setattr(knn, "_QUERY_BATCH", 2)
    batched = knn.evaluate_knn(cfg)
    assert batched.methods == whole.methods
    assert set(whole.methods[0].overall.precision) == {3, 10}


def test_knn_on_copies_only_is_exactly_one(tmp_path, encoder, monkeypatch, capsys):
    root = tmp_path / "photos"
    for c, name in enumerate(CLASSES):
        make_image(root / name / "0.png", seed=c)
        shutil.copyfile(root / name / "0.png", root / name / "1.png")
    index_folder(index_cfg(root, encoder, tmp_path))
    code, out, err = run_cli(monkeypatch, capsys, "eval", "knn", "--index", str(tmp_path / "idx"), "--format", "csv")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["class"] for r in rows] == ["(all)", *CLASSES]
    for r in rows:  # the twin at cosine 1 is the only class mate, found first, and the 1-NN vote is right
        assert (r["knn_top1"], r["map_at_r"], r["recall@1"], r["recall@10"]) == ("1.0000",) * 4


def test_the_random_init_baseline_has_the_index_encoders_stem_and_width(labelled, monkeypatch, tmp_path):
    """A seed-0 random encoder with the CIFAR stem at width 16: the baseline must be the same network (same
    seed, arch, stem, width, size), so its vectors equal the index's; an imagenet/64 baseline would not."""
    from moco.export import read_spec, save_random_encoder
    from retrieval.evaluate.baseline import random_init_index
    from retrieval.searching.searcher import SearchIndex

    enc = tmp_path / "cifar16"
    save_random_encoder(enc, embed_size=32, dim=16, seed=0, stem="cifar", width=16)
    index_folder(index_cfg(labelled["root"], enc, tmp_path))
    ours = SearchIndex.open(tmp_path / "idx")
    with random_init_index(ours, device="cpu") as base_dir:
        base = SearchIndex.open(base_dir)
        spec = read_spec(Path(base.manifest.encoder_path))
        assert (spec.stem, spec.width) == ("cifar", 16)
        np.testing.assert_allclose(base.vectors, ours.vectors, atol=1e-5)


def test_knn_compare_adds_a_random_init_row_equal_to_a_random_index(labelled, monkeypatch, capsys, tmp_path):
    # the index's own encoder is the tiny random encoder with seed 0: the random-init baseline is the same
    # network, so the two rows must agree exactly (the baseline rebuilt the same index from scratch)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    code, out, err = run_cli(monkeypatch, capsys, "eval", "knn", "--index", str(labelled["index"]), "--compare")
    assert code == 0, err
    assert list(tmp_path.iterdir()) == []  # the baseline's encoder and index were removed
    rows = [line.split() for line in out.splitlines()[2:]]
    ours = [r[2:] for r in rows if r[0] == "index"]
    random = [r[2:] for r in rows if r[0] == "random-init"]
    assert len(ours) == len(random) == 4 and ours == random
    # the last line says it as a searcher sees it: 2 class mates among the 8 other files on the first page
    assert out.splitlines()[-1] == (
        "of the first 10 results, 25.0% share the query's category, against 25.0% for a random network (+0.000)"
    )


def write(path: Path, doc: object) -> Path:
    path.write_text(json.dumps(doc))
    return path


def test_dedup_known_truth_gives_the_expected_pr(labelled, monkeypatch, capsys, tmp_path):
    # at --threshold exact only the three byte copies are grouped: predicted pairs = the 3 copy pairs.
    # truth: two copy pairs, one copy pair stated as a 3-group with its lone picture, one file not indexed.
    truth = {
        "groups": [
            ["cat/0.png", "cat/0 copy.png"],
            ["dog/0.png", "dog/0 copy.png", "dog/lone.png"],
            ["owl/lone.png", "gone.png"],
        ],
        # not duplicates (issue 27): grouping these counts against precision and is reported on its own
        "similar": [["owl/0.png", "owl/0 copy.png", "owl/lone.png"], ["cat/0.png", "cat/0 copy.png"]],
    }
    plot = tmp_path / "pr.png"
    args = ["eval", "dedup", "--index", str(labelled["index"]), "--truth", str(write(tmp_path / "t.json", truth))]
    code, out, err = run_cli(
        monkeypatch, capsys, *args, "--threshold", "exact", "--format", "json", "--plot", str(plot)
    )
    assert code == 0, err
    doc = json.loads(out)
    keys = "format_version mode index root files truth true_groups missing settings methods similar_pairs"
    assert set(doc) == set(keys.split())
    assert doc["similar_pairs"] == 3  # owl's three pairs; the cat pair is a duplicate pair
    assert doc["missing"] == {"count": 1, "first": ["gone.png"]} and "gone.png" in err
    assert doc["true_groups"] == 2  # owl/lone.png alone once gone.png is left out
    (m,) = doc["methods"]
    assert set(m) == {"method", "threshold", "at_threshold", "best", "curve", "seconds", "similar_grouped"}
    assert m["threshold"] is None and m["similar_grouped"] == 1  # the owl copy pair
    at = m["at_threshold"]
    # true pairs: cat copy, dog copy, dog/0-lone, dog copy-lone = 4; predicted: 3 copies; found: 2
    assert (at["tp"], at["predicted_pairs"], at["true_pairs"]) == (2, 3, 4)
    assert (at["precision"], at["recall"]) == pytest.approx((2 / 3, 2 / 4))
    assert len(m["curve"]) == 31 and max(p["f1"] for p in m["curve"]) == m["best"]["f1"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_dedup_compare_adds_random_init_and_phash(labelled, monkeypatch, capsys, tmp_path):
    truth = write(tmp_path / "t.json", {"groups": [[f"{c}/0.png", f"{c}/0 copy.png"] for c in CLASSES]})
    args = ["eval", "dedup", "--index", str(labelled["index"]), "--truth", str(truth), "--compare"]
    code, out, err = run_cli(monkeypatch, capsys, *args, "--threshold", "exact", "--format", "csv")
    assert code == 0, err
    rows = {r["method"]: r for r in csv.DictReader(io.StringIO(out))}
    assert set(rows) == {"index", "random-init", "phash"}
    for name in ("index", "random-init"):  # exact copies: found whatever the encoder
        assert (rows[name]["precision"], rows[name]["recall"]) == ("1.0000", "1.0000")
    assert rows["phash"]["recall"] == "1.0000"  # identical bytes hash the same: distance 0
    assert rows["phash"]["best_f1"] == "1.0000"


def test_pairs_outside_query_and_missing_match(labelled, monkeypatch, capsys, tmp_path):
    outside = tmp_path / "queries"
    outside.mkdir()
    shutil.copyfile(labelled["root"] / "dog" / "lone.png", outside / "q.png")  # not indexed: embedded
    pairs = [["cat/0.png", "cat/0 copy.png"], [str(outside / "q.png"), "dog/lone.png"], ["owl/0.png", "gone.png"]]
    args = ["eval", "pairs", "--index", str(labelled["index"]), "--pairs", str(write(tmp_path / "p.json", pairs))]
    code, out, err = run_cli(monkeypatch, capsys, *args, "--format", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert set(doc) == set(
        "format_version mode index root files pairs_file pairs embedded_queries missing settings methods".split()
    )
    assert doc["pairs"] == 2 and doc["embedded_queries"] == 1
    assert doc["missing"] == {"count": 1, "first": ["gone.png"]} and "1 files not in the index" in err
    (m,) = doc["methods"]
    # both matches are identical bytes to their query (cosine 1): rank 1
    assert m == {"method": "index", "queries": 2, "recall@1": 1.0, "recall@10": 1.0, "map": 1.0}


def test_pairs_exact_ranks_against_brute_force(labelled, monkeypatch, capsys, tmp_path):
    from retrieval.searching.searcher import SearchIndex

    idx = SearchIndex.open(labelled["index"])
    pairs = [["cat/lone.png", "dog/0.png"], ["owl/0.png", "cat/lone.png"]]
    args = ["eval", "pairs", "--index", str(labelled["index"]), "--pairs", str(write(tmp_path / "p.json", pairs))]
    code, out, err = run_cli(monkeypatch, capsys, *args, "--format", "json")
    assert code == 0, err
    x = idx.vectors
    ranks = []
    for q, match in pairs:
        qi, mi = idx.id_for_path(q), idx.id_for_path(match)
        s = x @ x[qi]
        others = [j for j in range(len(x)) if j != qi]
        ranks.append(1 + sum(s[j] > s[mi] for j in others))
    m = json.loads(out)["methods"][0]
    assert m["map"] == pytest.approx(np.mean([1 / r for r in ranks]))
    assert m["recall@1"] == np.mean([r <= 1 for r in ranks])


@pytest.mark.parametrize(
    "text, reason",
    [("{not json", "malformed JSON"), ('{"groups": [["a", 3]]}', "list of file paths"), ("[1, 2]", "expected")],
)
def test_bad_truth_file_is_one_line_and_exit_2(labelled, monkeypatch, capsys, tmp_path, text, reason):
    bad = tmp_path / "truth.json"
    bad.write_text(text)
    code, out, err = run_cli(
        monkeypatch, capsys, "eval", "dedup", "--index", str(labelled["index"]), "--truth", str(bad)
    )
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and str(bad) in err and reason in err


def test_bad_pairs_file_is_one_line_and_exit_2(labelled, monkeypatch, capsys, tmp_path):
    bad = write(tmp_path / "p.json", [["only-one"]])
    code, out, err = run_cli(
        monkeypatch, capsys, "eval", "pairs", "--index", str(labelled["index"]), "--pairs", str(bad)
    )
    assert code == 2 and len(err.strip().splitlines()) == 1 and str(bad) in err and "[query, match]" in err


def test_unlabelled_folder_and_one_class_exit_2(tmp_path, encoder, monkeypatch, capsys):
    flat = tmp_path / "flat"
    for i in range(3):
        make_image(flat / f"{i}.png", seed=i)
    index_folder(index_cfg(flat, encoder, tmp_path / "a"))
    code, _, err = run_cli(monkeypatch, capsys, "eval", "knn", "--index", str(tmp_path / "a" / "idx"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "unlabelled folder" in err and str(flat) in err

    one = tmp_path / "one"
    for i in range(3):
        make_image(one / "cats" / f"{i}.png", seed=i)
    make_image(one / "dogs" / "0.png", seed=9)  # a class of one: nothing to find
    index_folder(index_cfg(one, encoder, tmp_path / "b"))
    code, _, err = run_cli(monkeypatch, capsys, "eval", "knn", "--index", str(tmp_path / "b" / "idx"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "at least two classes" in err and str(one) in err


def test_unwritable_plot_is_one_line_and_exit_2(labelled, monkeypatch, capsys, tmp_path):
    truth = write(tmp_path / "t.json", {"groups": [["cat/0.png", "cat/0 copy.png"]]})
    plot = tmp_path / "no-such-folder" / "pr.png"
    args = ["eval", "dedup", "--index", str(labelled["index"]), "--truth", str(truth), "--plot", str(plot)]
    code, out, err = run_cli(monkeypatch, capsys, *args, "--threshold", "exact")
    assert code == 2 and len(err.strip().splitlines()) == 1 and str(plot) in err and "cannot write" in err
