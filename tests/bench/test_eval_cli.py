"""bench/kit/eval_cli.py: `retrieval eval` run as a subprocess of this checkout, its JSON parsed, on a tiny planted
folder: three classes, each an original and its byte copy, indexed with the tiny random encoder. Exact copies
are found whatever the encoder, so the figures are known by hand: P = R = 1 at --threshold exact, and kNN
top-1, MAP@R and recall@1 of 1 (a query's only class mate is its twin, at cosine 1). At the default threshold
bench/dedup/quality.py's cross-check (eval's figures = the pairwise figures of `retrieval dedup`'s groups)
holds, and it fails loudly on groups that differ."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import pytest

from bench.dedup.quality import check_against_dedup, groups_from_json
from bench.kit.eval_cli import RetrievalCommandError, eval_dedup, eval_knn, method, run
from retrieval.indexing.run import index_folder
from tests.retrieval.conftest import encoder, index_cfg, make_image, one_thread  # noqa: F401  (shared fixtures)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]
CLASSES = ("cat", "dog", "owl")


@pytest.fixture(scope="module")
def copies(tmp_path_factory, encoder) -> dict:  # noqa: F811
    """CLASS/0.png + CLASS/0 copy.png (same bytes) per class; the index and the truth file of the copies."""
    tmp = tmp_path_factory.mktemp("eval-cli")
    root = tmp / "photos"
    for c, name in enumerate(CLASSES):
        make_image(root / name / "0.png", seed=10 * c)
        shutil.copyfile(root / name / "0.png", root / name / "0 copy.png")
    index_folder(index_cfg(root, encoder, tmp))
    groups = [[f"{c}/0.png", f"{c}/0 copy.png"] for c in CLASSES]
    truth = tmp / "truth.json"
    truth.write_text(json.dumps({"groups": groups}))
    return {"index": tmp / "idx", "truth": truth, "groups": groups}


def test_eval_dedup_exact_copies_give_precision_and_recall_one(copies):
    doc = eval_dedup(copies["index"], copies["truth"], threshold="exact", compare=True)
    expected = ["retrieval", "eval", "dedup", "--index", str(copies["index"]), "--truth", str(copies["truth"])]
    expected += ["--format", "json", "--threshold", "exact", "--compare"]
    assert shlex.split(doc["command"]) == expected
    assert doc["mode"] == "dedup" and doc["files"] == 6 and doc["true_groups"] == 3
    for name in ("index", "random-init"):
        at = method(doc, name)["at_threshold"]
        assert (at["precision"], at["recall"], at["f1"]) == (1.0, 1.0, 1.0)
        assert (at["tp"], at["predicted_pairs"], at["true_pairs"]) == (3, 3, 3)
    assert method(doc, "phash")["at_threshold"]["recall"] == 1.0  # identical bytes: distance 0
    with pytest.raises(KeyError, match="no method"):
        method(doc, "other")


def test_eval_dedup_at_the_default_equals_retrieval_dedup_groups(copies):
    for verify in (True, False):
        doc = eval_dedup(copies["index"], copies["truth"], verify=verify)
        assert doc["settings"]["verify"] is verify and ("--no-verify" in doc["command"]) is not verify
        flag = "--verify" if verify else "--no-verify"
        groups = groups_from_json(json.loads(run("dedup", "--index", str(copies["index"]), "--format", "json", flag)))
        check_against_dedup(doc, groups, copies["groups"])  # the bench's cross-check: no drift
        assert method(doc, "index")["at_threshold"]["recall"] == 1.0  # the byte copies, whatever else groups
    with pytest.raises(RuntimeError, match="groups score"):
        check_against_dedup(doc, [], copies["groups"])


def test_eval_knn_copies_only_give_one(copies):
    doc = eval_knn(copies["index"], compare=True)
    assert doc["command"].endswith("--format json --compare") and doc["classes"] == list(CLASSES)
    for name in ("index", "random-init"):  # random-init: the same seed-0 network as the tiny encoder
        o = method(doc, name)["overall"]
        assert o["queries"] == 6
        assert (o["knn_top1"], o["map_at_r"], o["recall@1"]) == (1.0, 1.0, 1.0)


def test_a_failing_command_raises_with_its_stderr(tmp_path: Path):
    with pytest.raises(RetrievalCommandError, match="exit 2") as e:
        eval_knn(tmp_path / "no-index")
    assert str(tmp_path / "no-index") in str(e.value)
