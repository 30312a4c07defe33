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


def _train_config(monkeypatch, argv):
    """The config `longctx train ARGV` would run (the run itself replaced)."""
    import longctx.train
    import longctx.train.extend

    seen = {}
    monkeypatch.setattr(longctx.train, "train", lambda cfg: seen.setdefault("cfg", cfg) and "x")
    monkeypatch.setattr(longctx.train.extend, "extend", lambda cfg: seen.setdefault("cfg", cfg) and "x")
    assert cli.main(["train", *argv]) == 0
    return seen["cfg"]


def test_train_options_fill_the_nested_config(monkeypatch, tmp_path):
    from pathlib import Path

    root = Path(__file__).parents[1]
    cfg = _train_config(monkeypatch, ["--out", str(tmp_path / "o"), "--window", "256", "--ratios", "4", "8",
                                      "--sink", "2", "--steps", "3", "--checkpointing"])
    assert (cfg.beacon.window, cfg.beacon.ratios, cfg.beacon.sink) == (256, [4, 8], 2)
    assert cfg.beacon.ratio_mix == "step-random" and cfg.steps == 3 and cfg.checkpointing is True
    recipe = root / "recipes" / "smollm2-135m-beacon-memory-stage3.yaml"
    cfg = _train_config(monkeypatch, ["--recipe", str(recipe), "--out", str(tmp_path / "r"), "--window", "256",
                                      "--no-checkpointing"])
    assert cfg.beacon.window == 256 and cfg.beacon.ratios == [4, 4, 8] and cfg.beacon.sink == 4  # recipe kept
    assert cfg.recall_kinds == ["number", "code"] and cfg.checkpointing is False
    ext = _train_config(monkeypatch, ["--method", "pose", "--target-length", "16384", "--out", str(tmp_path / "p"),
                                      "--lr", "1e-5"])
    assert (ext.method, ext.target_length, ext.lr) == ("pose", 16384, 1e-5)


@pytest.mark.parametrize("argv,match", [
    (["--method", "cream", "--target-length", "16384", "--window", "256"], "--window do not apply to context extension"),
    (["--rope", "yarn"], "--rope do not apply to beacon training"),
    (["--ratios", "3"], "ratio 3 does not divide window 512"),
])
def test_train_options_of_the_other_method_are_refused(capsys, tmp_path, argv, match):
    assert cli.main(["train", "--out", str(tmp_path / "o"), *argv]) == 2
    assert match in capsys.readouterr().err


def test_any_subcommand_takes_a_yaml_config(capsys, tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(cli, "cmd_generate", lambda args: seen.setdefault("args", args) and 0)
    parser = cli.build_parser()
    (tmp_path / "g.yaml").write_text("max_new_tokens: 7\nratios: 8\nprompt: Who?\n")
    args = cli.apply_config(parser, ["generate", "--config", str(tmp_path / "g.yaml"), "--prompt", "Why?"])
    assert args.max_new_tokens == 7 and args.ratios == [8] and args.prompt == "Why?"  # the command line wins
    for text, match in (("lengths: 4k\n", "unknown options \\['lengths'\\]"), ("max_new_tokens: many\n", "not of type int"),
                        ("prompt: [a, b]\n", "takes one value")):
        (tmp_path / "b.yaml").write_text(text)
        with pytest.raises(ValueError, match=match):
            cli.apply_config(cli.build_parser(), ["generate", "--config", str(tmp_path / "b.yaml")])
    assert cli.main(["eval", "ppl", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read recipe" in capsys.readouterr().err
