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


def test_cpu_dtype_follows_native_bf16(monkeypatch):
    import torch

    from longctx import models

    for native, want in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(models, "cpu_bf16_native", lambda n=native: (n, "because"))
        assert models.default_dtype("cpu") == want
        assert models.parse_dtype("auto", "cpu") == want
        assert "because" in models.describe_dtype(want, "cpu", "auto")
    assert models.parse_dtype("fp32", "cpu") == torch.float32
    assert "asked" in models.describe_dtype(torch.float32, "cpu", "fp32")
