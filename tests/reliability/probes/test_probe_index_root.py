"""Probe 3 (issue 12): indexing a second folder with the same model (the default --index is named after
the model) must not replace the first folder's index: one line naming the index and both roots, exit 2,
and every file of the first index as it was."""

from __future__ import annotations

from tests.reliability.conftest import make_image, one_line_error, run_cli, snapshot


def test_a_second_root_is_refused_and_the_first_index_is_untouched(tmp_path, encoder, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    first, second = tmp_path / "photos", tmp_path / "other-photos"
    for i in range(4):
        make_image(first / f"{i}.png", seed=i)
        make_image(second / f"{i}.png", seed=10 + i)
    code, out, err = run_cli(monkeypatch, capsys, "index", str(first), "--model", str(encoder))
    assert code == 0, err
    index = tmp_path / "indexes" / encoder.name
    before = snapshot(index)
    assert any(p.endswith("catalog.sqlite") for p in before)

    for extra in ((), ("--rebuild",)):
        code, out, err = run_cli(monkeypatch, capsys, "index", str(second), "--model", str(encoder), *extra)
        one_line_error(code, err, str(first), str(second), "indexes/" + encoder.name, "--index")
        assert snapshot(index) == before

    code, out, err = run_cli(monkeypatch, capsys, "info", "--index", str(index))
    assert code == 0 and str(first) in out
    code, out, err = run_cli(
        monkeypatch, capsys, "index", str(second), "--model", str(encoder), "--index", "indexes/other"
    )
    assert code == 0 and "4 images indexed" in out, err
    assert snapshot(index) == before
