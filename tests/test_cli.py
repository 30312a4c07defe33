"""CLI help and error handling (no model needed)."""

from __future__ import annotations

import pytest

from longctx import cli


@pytest.mark.parametrize("sub", ["generate", "compress", "ask", "bench", "convert", "export", "eval", "train"])
def test_every_subcommand_has_help(sub, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([sub, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "usage: longctx " + sub in out and "--" in out


def test_missing_input_is_a_clear_error(capsys, tmp_path):
    rc = cli.main(["generate", str(tmp_path / "nope.txt")])
    assert rc == 2
    assert "no input file" in capsys.readouterr().err
