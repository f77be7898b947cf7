"""The ``incontext`` entry point: every subcommand is listed and parsing stays light."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from incontext.cli import SUBCOMMANDS, build_parser, main


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert name in out


def test_building_the_parser_imports_no_torch():
    # `incontext --help` must not pay for importing torch (1.6 s before the parser split)
    code = ("import sys; from incontext.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'scipy', 'h5py') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


def test_segment_parser_knows_ct_presets_and_text_options():
    parser = build_parser()
    args = parser.parse_args(["segment", "--query", "q.png", "--out", "o", "--window", "lung",
                              "--text", "left lung"])
    assert args.window == "lung" and args.text == ["left lung"]
    assert callable(args.func)


@pytest.mark.parametrize("argv", [["segment", "--query", "q.png", "--tiles", "0"],
                                  ["index", "build"], ["benchmark", "--index", "x.h5",
                                                       "--query-split", "train"]])
def test_usage_errors_are_one_line_with_a_pointer_to_help(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "usage:" not in err
    assert err.startswith(f"incontext {' '.join(a for a in argv[:2] if not a.startswith('-'))}")
    assert "error:" in err and "--help)" in err


def test_tables_are_not_cut_to_80_columns_when_piped(capsys, monkeypatch):
    from rich.console import Console

    from incontext.cli import PIPED_WIDTH, _wide_when_piped

    monkeypatch.delenv("COLUMNS", raising=False)
    with _wide_when_piped():  # capsys: stdout is not a terminal
        assert Console().width == PIPED_WIDTH
    assert "COLUMNS" not in os.environ  # restored
    monkeypatch.setenv("COLUMNS", "100")  # the user's own setting wins
    with _wide_when_piped():
        assert Console().width == 100
    assert os.environ["COLUMNS"] == "100"
    import contextlib

    import incontext.cli as cli

    used = []

    @contextlib.contextmanager
    def spy():
        used.append(True)
        yield

    monkeypatch.setattr(cli, "_wide_when_piped", spy)
    assert cli.main(["models", "--json"]) == 0 and used == [True]  # main runs commands in it
