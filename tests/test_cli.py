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


def test_eval_rows_name_the_adapter_portably(tmp_path):
    from longctx.cli import SHIPPED_ADAPTERS, adapter_label

    assert adapter_label(None) == "copy-initialised"
    assert adapter_label(str(SHIPPED_ADAPTERS["smollm2-135m"])) == "adapters/smollm2-135m-beacon"
    assert adapter_label(str(tmp_path)) == str(tmp_path)  # outside the project: as given
    assert adapter_label("org/some-adapter") == "org/some-adapter"
