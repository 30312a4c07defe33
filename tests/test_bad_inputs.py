"""Bad inputs across the CLI and the Python API: each gets one clear error naming the culprit,
and the user's files are left as they were. (Conversion and memory files: test_reference_checkpoints.py
and test_memory_files.py.)"""

from __future__ import annotations

import json

import pytest
import torch

from longctx import BeaconAdapter, BeaconConfig, BeaconModel, cli
from longctx.beacon.config import BeaconConfigError

from tiny import tiny_model

# ----------------------------------------------------------------------------- config types


@pytest.mark.parametrize("kwargs,field", [
    (dict(ratios="48"), "ratios"),
    (dict(ratios=[2.7]), "ratios"),
    (dict(ratios=[True]), "ratios"),
    (dict(ratios=4), "ratios"),
    (dict(window=16.0), "window"),
    (dict(window="16"), "window"),
    (dict(sink=1.5), "sink"),
    (dict(seed="0"), "seed"),
    (dict(attend_prev="no"), "attend_prev"),
    (dict(attend_prev=1), "attend_prev"),
    (dict(placement=3), "placement"),
    (dict(projections="qkv"), "projections"),
    (dict(ratio_mix=None), "ratio_mix"),
])
def test_beacon_config_types_are_not_coerced(kwargs, field):
    with pytest.raises(BeaconConfigError, match=f"BeaconConfig.{field}"):
        BeaconConfig(**{"window": 16, "ratios": [4], **kwargs})


@pytest.mark.parametrize("text,match", [
    ("steps: 10\nunknown_key: 1\n", "unknown settings \\['unknown_key'\\]"),
    ("steps: ten\n", "steps='ten'"),
    ("lr: 2e-4\n", "write 2.0e-4"),
    ("beacon:\n  ratios: 8\n", "r.yaml, beacon: BeaconConfig.ratios: must be a list of integers"),
    ("beacon: 512\n", "beacon must be a mapping"),
    ("beacon:\n  windw: 512\n", "unknown settings \\['windw'\\]"),
    ("window: 512\n", "unknown settings \\['window'\\]"),
    ("checkpointing: 'no'\n", "checkpointing='no'"),
    ("data: moby-dick\n", "data='moby-dick'"),
    ("- steps: 10\n", "must be a mapping"),
    ("steps: [unclosed\n", "not valid YAML"),
    ("save_every: 0\n", "save_every must be at least 1"),
    ("min_length: 900\nmax_length: 800\n", "below min_length"),
    ("time_limit: -3\n", "time_limit must be positive"),
])
def test_train_recipes_with_bad_settings_are_refused(tmp_path, text, match):
    from longctx.train.trainer import TrainConfig

    recipe = tmp_path / "r.yaml"
    recipe.write_text(text)
    with pytest.raises(ValueError, match=match):
        TrainConfig.from_yaml(str(recipe))


@pytest.mark.parametrize("text,match", [
    ("method: cream\nrope: magic\n", "rope 'magic'"),
    ("method: dream\n", "method 'dream'"),
    ("method: cream\ntarget_length: 32k\n", "target_length='32k'"),
    ("method: cream\nlora: 8.5\n", "lora=8.5"),
])
def test_extension_recipes_with_bad_settings_are_refused(tmp_path, text, match):
    from longctx.train.extend import ExtendConfig

    recipe = tmp_path / "r.yaml"
    recipe.write_text(text)
    with pytest.raises(ValueError, match=match):
        ExtendConfig.from_yaml(str(recipe))


def test_every_shipped_recipe_loads():
    from pathlib import Path

    import yaml

    from longctx.train.extend import ExtendConfig
    from longctx.train.trainer import TrainConfig

    recipes = sorted((Path(__file__).parents[1] / "recipes").glob("*.yaml"))
    assert len(recipes) >= 5
    for r in recipes:
        method = (yaml.safe_load(r.read_text()) or {}).get("method", "beacon")
        cfg = (TrainConfig if method == "beacon" else ExtendConfig).from_yaml(str(r))
        assert cfg.steps >= 1, r

# ----------------------------------------------------------------------------- CLI surface


def _cli_error(capsys, argv) -> str:
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("make,match", [
    (lambda d: d, "is a directory"),
    (lambda d: (d / "x.json").write_text(json.dumps({"body": "no text"})) and d / "x.json", "string field 'text'"),
    (lambda d: (d / "x.json").write_text(json.dumps(["a", "b"])) and d / "x.json", "string field 'text'"),
    (lambda d: (d / "x.jsonl").write_text('{"text": "a"}\n{"nope": 1}\n') and d / "x.jsonl", "line 2"),
    (lambda d: (d / "x.json").write_text("{broken") and d / "x.json", "not valid JSON"),
    (lambda d: (d / "x.txt").write_bytes(b"\xff\xfe\xfa") and d / "x.txt", "not UTF-8"),
    (lambda d: (d / "x.txt").write_text("  \n") and d / "x.txt", "holds no text"),
    (lambda d: d / "missing.txt", "no input file"),
])
def test_cli_bad_input_files(tmp_path, capsys, make, match):
    src = make(tmp_path)
    err = _cli_error(capsys, ["generate", str(src), "--model", str(tmp_path / "never-loaded")])
    assert match.split("'")[0] in err, err


@pytest.mark.parametrize("flags,match", [
    (["--top-k", "-5"], "--top-k"),
    (["--max-new-tokens", "-5"], "--max-new-tokens"),
    (["--max-new-tokens", "0"], "--max-new-tokens"),
    (["--temperature", "-1"], "--temperature"),
    (["--top-p", "1.5"], "--top-p"),
    (["--top-p", "0"], "--top-p"),
])
def test_cli_bad_generation_options(tmp_path, capsys, flags, match):
    (tmp_path / "in.txt").write_text("some text")
    err = _cli_error(capsys, ["generate", str(tmp_path / "in.txt"), *flags])
    assert match in err


@pytest.mark.parametrize("device,match", [("tpu", "device 'tpu'"), ("banana", "unknown device"),
                                          ("cuda", "no CUDA GPU")])
def test_cli_bad_devices(tmp_path, capsys, device, match):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the case needs a machine without it")
    (tmp_path / "in.txt").write_text("some text")
    err = _cli_error(capsys, ["generate", str(tmp_path / "in.txt"), "--device", device])
    assert match in err


def test_cli_output_paths_are_checked_before_reading(tmp_path, capsys):
    (tmp_path / "in.txt").write_text("some text")
    (tmp_path / "afile").write_text("mine")
    err = _cli_error(capsys, ["generate", str(tmp_path / "in.txt"), "--json", str(tmp_path)])
    assert "--json" in err and "directory" in err
    err = _cli_error(capsys, ["generate", str(tmp_path / "in.txt"), "--json", str(tmp_path / "afile" / "x.json")])
    assert "is a file, not a folder" in err
    err = _cli_error(capsys, ["compress", str(tmp_path / "in.txt"), "--out", str(tmp_path)])
    assert "--out" in err
    err = _cli_error(capsys, ["eval", "passkey", "--out", str(tmp_path / "afile")])
    assert "is a file" in err
    err = _cli_error(capsys, ["train", "--out", str(tmp_path / "afile")])
    assert "is a file" in err
    err = _cli_error(capsys, ["ask", str(tmp_path / "nomem.safetensors"), "--prompt", "q"])
    assert "no memory file" in err
    assert (tmp_path / "afile").read_text() == "mine"


def test_cli_bad_recipe_file(tmp_path, capsys):
    (tmp_path / "r.yaml").write_text("- a list\n")
    err = _cli_error(capsys, ["train", "--recipe", str(tmp_path / "r.yaml")])
    assert "must be a mapping" in err
    err = _cli_error(capsys, ["train", "--recipe", str(tmp_path / "none.yaml")])
    assert "cannot read recipe" in err
    (tmp_path / "s.yaml").write_text("save_every: 1\n")
    err = _cli_error(capsys, ["train", "--recipe", str(tmp_path / "s.yaml"), "--save-every", "0"])
    assert "save_every" in err

# ----------------------------------------------------------------------------- eval fairness


def test_bare_beacon_takes_the_run_ratio():
    from longctx.eval.methods import make_method, parse_methods

    model = tiny_model()
    specs = parse_methods("truncate,beacon,beacon:16")
    m = make_method(specs[1], model, None, 64, 16, 4)
    assert m.bm.config.ratios == [4]
    m.close()
    m = make_method(specs[2], model, None, 64, 16, 4)
    assert m.bm.config.ratios == [16]
    m.close()


@pytest.mark.parametrize("methods,lengths,task,match", [
    ("beacon:x", "1k", "passkey", "ratio must be an integer"),
    ("truncate:-4", "1k", "passkey", "budget must be a positive integer"),
    ("magic", "1k", "passkey", "unknown method"),
    ("full", "4q", "passkey", "not a number of tokens"),
    ("full", "0", "passkey", "must be positive"),
    ("full", "1k", "nosuchtask", "unknown task"),
])
def test_eval_bad_arguments_write_nothing(tmp_path, methods, lengths, task, match):
    from longctx.eval import run_eval

    with pytest.raises(ValueError, match=match):
        run_eval(task, tiny_model(), None, tmp_path / "out", methods=methods, lengths=lengths)
    assert not (tmp_path / "out").exists()


def test_eval_rerun_with_other_settings_is_refused(tmp_path):
    from longctx.eval.runner import _check_same_settings

    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"task": "passkey", "window": 512, "adapter": "a", "ratio": 8}))
    _check_same_settings(out, {"task": "passkey", "window": 512, "adapter": "a", "ratio": 8}, True)
    with pytest.raises(ValueError, match="window: 512 -> 1024"):
        _check_same_settings(out, {"task": "passkey", "window": 1024, "adapter": "a", "ratio": 8}, True)
    with pytest.raises(ValueError, match="adapter: 'a' -> 'b'"):
        _check_same_settings(out, {"task": "passkey", "window": 512, "adapter": "b", "ratio": 8}, True)

# ----------------------------------------------------------------------------- models and API edges


def test_non_rope_model_is_refused():
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=64, n_positions=64))
    with pytest.raises(ValueError, match="rotary position embedding"):
        BeaconAdapter.from_model(gpt2, BeaconConfig(window=16, ratios=[4]))


def test_interleaved_rope_model_is_refused():
    from transformers import CohereConfig, CohereForCausalLM

    cfg = CohereConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    with pytest.raises(ValueError, match="interleaved RoPE"):
        BeaconAdapter.from_model(CohereForCausalLM(cfg), BeaconConfig(window=16, ratios=[4]))


@pytest.fixture(scope="module")
def bm():
    return BeaconModel(tiny_model(), config=BeaconConfig(window=16, ratios=[4]))


@pytest.mark.parametrize("ids,mask,match", [
    (torch.ones(1, 3, dtype=torch.long), torch.ones(1, 2, dtype=torch.long), "attention_mask has shape"),
    (torch.full((1, 3), 500), None, "outside the vocabulary"),
    (torch.full((1, 3), -1), None, "outside the vocabulary"),
    (torch.ones(1, 3), None, "integer token ids"),
    (torch.ones(1, 2, 3, dtype=torch.long), None, "\\[batch, length\\]"),
    (torch.ones(1, 3, dtype=torch.long), torch.tensor([[1, 0, 1]]), "left-padded"),
])
def test_api_bad_tensors(bm, ids, mask, match):
    bm.reset()
    with pytest.raises(ValueError, match=match):
        bm(ids, attention_mask=mask)


def test_positions_past_the_model_warn():
    model = tiny_model(max_position_embeddings=24)
    b = BeaconModel(model, config=BeaconConfig(window=16, ratios=[2]))
    with pytest.warns(UserWarning, match="more than the model's 24"):
        with torch.no_grad():
            b(torch.randint(3, 100, (1, 80)))


def test_adapter_for_another_shape_is_refused(tmp_path):
    from longctx.beacon.adapter import AdapterError

    out = BeaconAdapter.from_model(tiny_model(), BeaconConfig(window=16, ratios=[4])).save(tmp_path / "a")
    with pytest.raises(AdapterError, match="num_hidden_layers"):
        BeaconAdapter.load(out, tiny_model(num_hidden_layers=3))
    with pytest.raises(AdapterError, match="hidden_size"):
        BeaconAdapter.load(out, tiny_model(hidden_size=32, intermediate_size=48))
    (out / "adapter_config.json").write_text("{not json")
    with pytest.raises(AdapterError, match="cannot read"):
        BeaconAdapter.load(out, tiny_model())
