"""#26: one `--format` option, declared once in cli/commands/options.py, in every command that prints a table; an
unknown format is one `error:` line and exit code 2 before any work (here: on an index that does not exist)."""

from __future__ import annotations

from typing import Any

import pytest
import typer

from cli.commands import options, register_all
from tests import cli_runner

WITH_FORMAT = {"search", "dedup", "info", "eval knn", "eval dedup", "eval pairs"}


def _commands() -> dict[str, Any]:
    app = typer.Typer()
    register_all(app)
    root = typer.main.get_command(app)
    found: dict[str, Any] = {}
    for name, cmd in root.commands.items():
        if hasattr(cmd, "commands"):  # a group (typer bundles its own click)
            found |= {f"{name} {sub}": c for sub, c in cmd.commands.items()}
        else:
            found[name] = cmd
    return found


def test_every_format_option_is_the_shared_one():
    with_format = {}
    for name, cmd in _commands().items():
        params = [p for p in cmd.params if "--format" in getattr(p, "opts", ())]
        if params:
            with_format[name] = params[0]
    assert set(with_format) == WITH_FORMAT
    for name, param in with_format.items():
        assert param.default == "table", name
        assert param.help == " | ".join(options.FORMATS), name
        with pytest.raises(Exception, match="choose one of table, json, csv"):  # the shared check, not a copy
            param.callback(None, param, "xml")


@pytest.mark.parametrize("command", sorted(WITH_FORMAT))
def test_an_unknown_format_is_one_line_before_any_work(command, tmp_path, monkeypatch, capsys):
    extra = {"search": [str(tmp_path / "q.png")], "eval dedup": ["--truth", "t.json"], "eval pairs": ["--pairs", "p"]}
    args = [*command.split(), *extra.get(command, []), "--index", str(tmp_path / "nowhere"), "--format", "xml"]
    code, out, err = cli_runner.run_cli(monkeypatch, capsys, register_all, *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0] == "error: --format 'xml': choose one of table, json, csv"
    assert out == "" and not (tmp_path / "nowhere").exists()
