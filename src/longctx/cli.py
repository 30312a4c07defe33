"""The ``longctx`` command: each subcommand is a plain function over parsed options."""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

DEFAULT_PROMPT = "Who is the captain of the Pequod, and what is he hunting? Answer in two sentences."
SHIPPED_ADAPTERS = {"smollm2-135m": Path(__file__).resolve().parents[2] / "adapters" / "smollm2-135m-beacon"}


def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", default="smollm2-135m",
                   help="hub id, local directory, or the embedded default 'smollm2-135m' (default)")
    g.add_argument("--adapter", default=None,
                   help="beacon adapter directory or hub id; default: the shipped adapter for the embedded "
                        "model if present, else a copy-initialised (untrained) adapter; 'copy-init' forces the latter")
    g.add_argument("--dtype", default="auto",
                   help="auto (default: bf16 on GPUs and on CPUs with AMX/AVX-512 BF16, else fp32), bf16, fp16 or fp32")
    g.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    g.add_argument("--attn", default="sdpa", help="attention implementation of the base model (default sdpa)")


def _add_beacon_args(p: argparse.ArgumentParser) -> None:
    """--window/--ratios/--ratio-mix/--sink over the adapter's settings (help from BeaconConfig); a
    long input is read with the ratios and ``adapt-K`` mix of READ_RATIOS/READ_MIX by default."""
    import dataclasses

    from longctx.beacon.config import READ_MIX, READ_RATIOS, BeaconConfig

    helps = {f.name: f.metadata.get("help", "") for f in dataclasses.fields(BeaconConfig)}
    g = p.add_argument_group("beacon (override the adapter's settings)")
    g.add_argument("--window", type=int, default=None, help=helps["window"] + " (default: the adapter's)")
    g.add_argument("--ratios", type=int, nargs="+", default=list(READ_RATIOS),
                   help=helps["ratios"] + f" (default: {' '.join(map(str, READ_RATIOS))})")
    g.add_argument("--ratio-mix", default=READ_MIX, help=helps["ratio_mix"] + f" (default: {READ_MIX})")
    g.add_argument("--sink", type=int, default=None, help=helps["sink"] + " (default: the adapter's)")


def _say_dtype(model, args: argparse.Namespace) -> None:
    from longctx.models import describe_dtype

    w = model.get_input_embeddings().weight
    print(describe_dtype(w.dtype, w.device, args.dtype), file=sys.stderr)


def adapter_source(args: argparse.Namespace) -> str | None:
    """--adapter, else the shipped adapter of the embedded default if present, else None
    (``--adapter copy-init``: the untrained, copy-initialised adapter on purpose)."""
    shipped = SHIPPED_ADAPTERS.get(args.model)
    if args.adapter == "copy-init":
        return None
    if args.adapter:
        return args.adapter
    return str(shipped) if shipped and (shipped / "adapter.safetensors").exists() else None


def build_beacon(args: argparse.Namespace):
    """Load the model and attach the adapter chosen by the options; returns (BeaconModel, note)."""
    from longctx import BeaconAdapter, BeaconConfig, BeaconModel, load_model

    model, tok = load_model(args.model, dtype=args.dtype, device=args.device, attn_implementation=args.attn)
    _say_dtype(model, args)
    source = adapter_source(args)
    if source:
        adapter = BeaconAdapter.load(source, model)
        note = f"adapter: {source}"
    else:
        adapter = BeaconAdapter.from_model(model, BeaconConfig())
        note = ("adapter: copy-initialised, UNTRAINED (beacon weights are copies of the model's own; no trained "
                "adapter was given or shipped for this model): expect poor answers; train one with `longctx train`")
    adapter.config = adapter.config.override(**{k: getattr(args, k, None) for k in ("window", "ratios", "ratio_mix", "sink")})
    return BeaconModel(model, tok, adapter), note


def check_output_file(path: str | None, what: str) -> None:
    """Refuse an output file path before any long work: a folder, or a folder that cannot be made."""
    if path is None:
        return
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{what} {path} is a directory; give a file name")
    parent = p.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{what} {path}: {parent} is a file, not a folder")
    import os

    if not os.access(parent, os.W_OK):
        raise ValueError(f"{what} {path}: cannot write in {parent}")


def check_output_dir(path: str | None, what: str) -> None:
    if path is not None and Path(path).exists() and not Path(path).is_dir():
        raise ValueError(f"{what} {path} is a file; give a folder")


def _check_gen_args(args: argparse.Namespace) -> None:
    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    if args.top_k < 0:
        raise ValueError(f"--top-k must be 0 (all tokens) or more, got {args.top_k}")
    if not args.temperature > 0:
        raise ValueError(f"--temperature must be positive, got {args.temperature}")
    if not 0 < args.top_p <= 1:
        raise ValueError(f"--top-p must be in (0, 1], got {args.top_p}")
    check_output_file(getattr(args, "json", None), "--json")


def _gen_kwargs(args: argparse.Namespace) -> dict:
    """generate() options; the sampling ones only with --sample (greedy decoding ignores them)."""
    if not args.sample:
        return {"max_new_tokens": args.max_new_tokens, "do_sample": False}
    return {"max_new_tokens": args.max_new_tokens, "do_sample": True, "temperature": args.temperature,
            "top_k": args.top_k, "top_p": args.top_p}


def _add_gen_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("generation")
    g.add_argument("--max-new-tokens", type=int, default=96, help="tokens to generate (default 96)")
    g.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    g.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (with --sample)")
    g.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (with --sample; 0 = all)")
    g.add_argument("--top-p", type=float, default=0.9, help="nucleus sampling mass (with --sample)")
    g.add_argument("--json", default=None, help="also write the summary as JSON to this file")


def _summary(bm, note: str, answer: str, read_s: float) -> dict:
    read = bm.tokens_read()[0]
    held = bm.kv_entries()[0]
    st = bm.stats
    return {
        "answer": answer,
        "tokens_read": read,
        "kv_entries_held_per_layer": held,
        "kv_entries_full_attention": read,
        "kv_reduction": round(read / max(held, 1), 2),
        "kv_bytes_held": bm.memory.kv_bytes(),
        "read_seconds": round(read_s, 2),
        "read_tokens_per_second": round((read - st.get("new_tokens", 0)) / max(read_s, 1e-9), 1),
        "decode_ms_per_token": round(1000 * st.get("decode_s", 0) / max(st.get("new_tokens", 1), 1), 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "config": bm.config.to_dict(),
        "adapter": note,
    }


def _print_summary(s: dict) -> None:
    print("\n=== answer ===")
    print(s["answer"])
    print("\n=== summary ===")
    print(f"tokens read            : {s['tokens_read']:,}")
    print(f"KV entries per layer   : {s['kv_entries_held_per_layer']:,} held (beacon) vs "
          f"{s['kv_entries_full_attention']:,} for full attention ({s['kv_reduction']}x smaller); "
          f"{s['kv_bytes_held'] / 2**20:.1f} MiB held")
    print(f"speed                  : {s['read_tokens_per_second']:,} tokens/s reading "
          f"({s['read_seconds']} s), {s['decode_ms_per_token']} ms per generated token; "
          f"peak memory {s['peak_rss_mb']:,.0f} MiB")
    c = s["config"]
    print(f"beacon                 : window {c['window']}, ratios {c['ratios']} ({c['ratio_mix']}), sink {c['sink']}")
    print(s["adapter"])


def cmd_generate(args: argparse.Namespace) -> int:
    """Read a long input with beacon compression and answer a prompt about it."""
    from longctx.data import read_text

    _check_gen_args(args)
    text = read_text(args.input)
    bm, note = build_beacon(args)
    print(note, file=sys.stderr)
    t = time.perf_counter()
    if args.no_chat:
        ids = bm.tokenizer(text + args.prompt, return_tensors="pt").input_ids.to(bm.device)
        print(f"reading {ids.shape[1]:,} tokens ...", file=sys.stderr)
        new = bm.generate(ids, progress=True, **_gen_kwargs(args))[0]
        answer = bm.tokenizer.decode(new, skip_special_tokens=True).strip()
    else:
        answer = bm.ask(args.prompt, context=text, progress=True, **_gen_kwargs(args))
    total = time.perf_counter() - t
    read_s = total - bm.stats.get("decode_s", 0)
    s = _summary(bm, note, answer, read_s)
    _print_summary(s)
    if args.json:
        Path(args.json).write_text(json.dumps(s, indent=2))
    return 0


def cmd_compress(args: argparse.Namespace) -> int:
    """Read a long input once and save its compressed memory for later questions."""
    from longctx.data import read_text

    check_output_file(args.out, "--out")
    text = read_text(args.input)
    bm, note = build_beacon(args)
    print(note, file=sys.stderr)
    t = time.perf_counter()
    n = bm.read(text, progress=True)
    path = bm.save_memory(args.out)
    print(f"read {n:,} tokens in {time.perf_counter() - t:.1f} s; memory holds {bm.kv_entries()[0]:,} KV entries "
          f"per layer ({bm.memory.kv_bytes() / 2**20:.1f} MiB); saved to {path}")
    return 0


def cmd_ask(args: argparse.Namespace) -> int:
    """Answer one or more prompts from a saved memory without re-reading the text."""
    _check_gen_args(args)
    if not Path(args.memory).is_file():
        raise ValueError(f"no memory file {args.memory}")
    bm, note = build_beacon(args)
    print(note, file=sys.stderr)
    for prompt in args.prompt:
        bm.load_memory(args.memory)
        t = time.perf_counter()
        answer = bm.ask(prompt, **_gen_kwargs(args))
        print(f"Q: {prompt}\nA: {answer}\n   ({time.perf_counter() - t:.1f} s, memory {bm.tokens_read()[0]:,} tokens)")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Full attention vs beacon side by side: prefill, decode, KV size, peak RSS."""
    from longctx.bench import run_bench

    run_bench(args)
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    """Import a reference Activation Beacon checkpoint as a longctx adapter (+ plain base model)."""
    from longctx.beacon.convert import import_reference

    out = import_reference(args.ref_dir, args.out_dir, write_base=args.write_base, force=args.force)
    base = f"{out}/base" if args.write_base else args.ref_dir
    print(f"wrote adapter {out}; base model weights: {base}")
    print(f"use: longctx generate FILE --model {base} --adapter {out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Export a longctx adapter + its base model in the reference checkpoint format."""
    from longctx import BeaconAdapter, load_model
    from longctx.beacon.convert import export_reference

    model, _ = load_model(args.model, dtype=args.dtype, device="cpu", with_tokenizer=False)
    try:
        from transformers import AutoTokenizer

        from longctx.models import resolve

        tok = AutoTokenizer.from_pretrained(resolve(args.model))
    except (OSError, ValueError):
        tok = None  # the reference checkpoint is written without tokenizer files
    adapter = BeaconAdapter.load(args.adapter, model)
    out = export_reference(adapter, model, args.out_dir, tok, force=args.force)
    print(f"wrote reference-format checkpoint {out}")
    return 0


def adapter_label(source: str | None) -> str:
    """How results name an adapter: repo-relative for a shipped one, as given otherwise."""
    if source is None:
        return "copy-initialised"
    root = Path(__file__).resolve().parents[2]
    path = Path(source).resolve()
    return str(path.relative_to(root)) if path.is_relative_to(root) else source


def cmd_eval(args: argparse.Namespace) -> int:
    """Run a long-context task for several methods side by side; write JSON, a table and plots."""
    from longctx import BeaconAdapter, load_model
    from longctx.data import read_text
    from longctx.eval import run_eval
    from longctx.eval.report import write_report

    check_output_dir(args.out, "--out")
    model, tok = load_model(args.model, dtype=args.dtype, device=args.device, attn_implementation=args.attn)
    _say_dtype(model, args)
    source = adapter_source(args)
    adapter = BeaconAdapter.load(source, model) if source else None
    kw = {}
    if args.data:
        kw["data"] = args.data
    if args.text:
        kw["text"] = read_text(args.text)
        stem = Path(args.text).stem
        if args.documents:  # disjoint parts of the text, each its own document
            n = len(kw["text"]) // args.documents
            kw["documents"] = [(f"{stem}-part{i + 1}", kw["text"][i * n : (i + 1) * n]) for i in range(args.documents)]
        else:
            half = kw["text"][len(kw["text"]) // 2 :]
            kw["documents"] = [(f"{stem}-start", kw["text"]), (f"{stem}-middle", half)]
    if args.in_memory:
        kw["before_last"] = args.window
    if args.depths:
        kw["depths"] = kw["positions"] = args.depths
    out = Path(args.out or f"runs/eval/{args.task}")
    run_eval(args.task, model, tok, out, methods=args.methods, lengths=args.lengths, samples=args.samples,
             seed=args.seed, window=args.window, ratio=args.ratio, adapter=adapter,
             max_full_length=args.max_full_length, task_kwargs=kw,
             config={"model": args.model, "adapter": adapter_label(source)})
    report = write_report(out)
    print(report.read_text())
    print(f"results: {out}/results.jsonl, report: {report}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train a beacon adapter (base model frozen), or extend a model's context with --method
    cream/pose/randpos/full; checkpoints and resumes from --out. Options override the recipe."""
    from longctx.train import TrainConfig, train
    from longctx.train.extend import ExtendConfig, extend
    from longctx.typed import build, merge, options_of, read_yaml

    recipe = read_yaml(args.recipe) if args.recipe else {}
    method = args.method or recipe.get("method") or "beacon"
    check_output_dir(args.out, "--out")
    cls = TrainConfig if method == "beacon" else ExtendConfig
    beacon_opts, extension_opts = args.train_options
    mine, theirs = (beacon_opts, extension_opts) if cls is TrainConfig else (extension_opts, beacon_opts)
    foreign = sorted(d.split(".")[-1] for d in set(theirs) - set(mine) if getattr(args, d, None) is not None)
    if foreign:
        kind = "beacon training" if cls is TrainConfig else "context extension"
        raise ValueError(f"--{', --'.join(f.replace('_', '-') for f in foreign)} do not apply to {kind} "
                         f"(--method {method})")
    given = options_of(args, mine)
    if cls is ExtendConfig:
        given["method"] = method
        if not args.recipe and not args.target_length:
            raise ValueError("--method cream/pose/randpos/full needs --target-length")
    cfg = build(cls, merge(recipe, given), f"recipe {args.recipe}" if args.recipe else "train options")
    if cls is ExtendConfig:
        out = extend(cfg)
        print(f"extended model in {out}/model (loads in stock transformers)")
        return 0
    out = train(cfg)
    print(f"adapter and checkpoints in {out}")
    return 0


def _add_train_options(p: argparse.ArgumentParser) -> None:
    """The train subcommand's options, made from TrainConfig, its beacon section and ExtendConfig;
    ``args.train_options`` holds the destinations of each (beacon training, context extension)."""
    import dataclasses

    from longctx.beacon.config import BeaconConfig, training_beacon
    from longctx.train import TrainConfig
    from longctx.train.extend import ExtendConfig
    from longctx.typed import add_options

    p.add_argument("--method", default=None, choices=["beacon", "cream", "pose", "randpos", "full"],
                   help="beacon adapter (default, or the recipe's) or context extension by position ids")
    p.add_argument("--recipe", default=None, help="YAML recipe (recipes/*.yaml); options below override it")
    shared = {f.name for f in dataclasses.fields(TrainConfig)} & {f.name for f in dataclasses.fields(ExtendConfig)}
    taken = {"method"}
    g = p.add_argument_group("training (beacon; the shared ones also context extension)")
    beacon_opts = add_options(g, TrainConfig, taken=taken, alt=ExtendConfig, alt_label="extension")
    g = p.add_argument_group("beacon settings trained")
    beacon_opts += add_options(g, BeaconConfig, section="beacon", skip=("seed",), defaults=training_beacon(),
                               taken=taken)
    g = p.add_argument_group("context extension only (--method cream/pose/randpos/full)")
    extension_opts = add_options(g, ExtendConfig, taken=taken) + sorted(shared - {"method"})
    p.set_defaults(train_options=(beacon_opts, extension_opts))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="longctx", description="longctx: read inputs far longer than a model's window (Activation Beacon).")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("generate", help="read a long input with beacon compression and answer a prompt",
                       description=cmd_generate.__doc__)
    p.add_argument("input", nargs="?", default="moby-dick",
                   help="text file (.txt, .jsonl/.json with 'text'), '-' for stdin, or 'moby-dick' (default)")
    p.add_argument("--prompt", default=DEFAULT_PROMPT, help="question or instruction after the input")
    p.add_argument("--no-chat", action="store_true", help="feed input+prompt as plain text (no chat template)")
    _add_model_args(p)
    _add_beacon_args(p)
    _add_gen_args(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("compress", help="read an input once and save its compressed memory",
                       description=cmd_compress.__doc__)
    p.add_argument("input", nargs="?", default="moby-dick", help="text file, '-' for stdin, or 'moby-dick'")
    p.add_argument("--out", required=True, help="memory file to write (one safetensors file)")
    _add_model_args(p)
    _add_beacon_args(p)
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("ask", help="answer prompts from a saved memory", description=cmd_ask.__doc__)
    p.add_argument("memory", help="memory file written by 'longctx compress'")
    p.add_argument("--prompt", nargs="+", required=True, help="one or more questions, each answered from the memory")
    _add_model_args(p)
    _add_gen_args(p)
    p.set_defaults(func=cmd_ask)

    p = sub.add_parser("convert", help="import a reference Activation Beacon checkpoint", description=cmd_convert.__doc__)
    p.add_argument("ref_dir", help="reference checkpoint directory (config with beacon_* fields, safetensors weights)")
    p.add_argument("out_dir", help="where to write the longctx adapter")
    p.add_argument("--write-base", action="store_true", help="also write the base weights as a plain model in OUT_DIR/base")
    p.add_argument("--force", action="store_true", help="replace OUT_DIR if it is not empty")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("export", help="export an adapter in the reference checkpoint format", description=cmd_export.__doc__)
    p.add_argument("adapter", help="longctx adapter directory or hub id")
    p.add_argument("out_dir", help="where to write the reference-format model")
    p.add_argument("--model", default="smollm2-135m", help="the adapter's base model (hub id, local dir, smollm2-135m)")
    p.add_argument("--dtype", default="bf16", help="dtype of the written weights (default bf16)")
    p.add_argument("--force", action="store_true", help="replace OUT_DIR if it is not empty")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("eval", help="evaluate methods side by side on a long-context task", description=cmd_eval.__doc__)
    p.add_argument("task", help="ppl, passkey, needle, lines, kv, ruler-multikey, ruler-multivalue, ruler-vartrack, "
                                "ruler-cwe, ruler-fwe, longbench (with --data)")
    p.add_argument("--methods", default="full,truncate,streaming,beacon",
                   help="comma list of full, truncate[:B], streaming[:B], beacon[:RATIO|adapt-K], beacon-nomem[:RATIO] "
                        "(memory emptied at every window); truncate and streaming default to the beacon's KV budget")
    p.add_argument("--lengths", default="4k,8k,16k,32k", help="context lengths, e.g. 4k,8k,16k,32k")
    p.add_argument("--samples", type=int, default=4, help="items per length (depths/positions spread evenly)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated tasks")
    p.add_argument("--window", type=int, default=1024, help="beacon window")
    p.add_argument("--ratio", type=int, default=8, help="beacon ratio that sets the equal KV budget")
    p.add_argument("--max-full-length", type=int, default=None, help="skip full attention above this length")
    p.add_argument("--data", default=None, help="LongBench-format jsonl for the longbench task")
    p.add_argument("--text", default=None,
                   help="a local text (file, 'moby-dick' or 'sotu-heldout') for needle/ppl (ppl: from its start and middle)")
    p.add_argument("--documents", type=int, default=None,
                   help="ppl: cut --text into N disjoint documents (default: from its start and its middle)")
    p.add_argument("--in-memory", action="store_true",
                   help="passkey: place the key before the last --window tokens, so beacon holds it only in memory")
    p.add_argument("--depths", type=float, nargs="+", default=None,
                   help="passkey/needle depths or lines/kv positions (0..1), one item each (default: --samples spread)")
    p.add_argument("--out", default=None, help="results folder (default runs/eval/TASK); reruns resume")
    _add_model_args(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("train", help="train a beacon adapter, or extend a model's context", description=cmd_train.__doc__)
    _add_train_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("bench", help="benchmark full attention vs beacon side by side", description=cmd_bench.__doc__)
    p.add_argument("--lengths", type=int, nargs="+", default=[4096, 8192, 16384, 32768], help="input lengths")
    p.add_argument("--ratios", type=int, nargs="+", default=[2, 8, 32], help="beacon ratios to measure")
    p.add_argument("--window", type=int, default=1024, help="beacon window")
    p.add_argument("--decode-tokens", type=int, default=16, help="tokens decoded per measurement")
    p.add_argument("--no-full", action="store_true", help="skip full attention")
    p.add_argument("--max-full-length", type=int, default=None, help="skip full attention above this length")
    p.add_argument("--json", default=None, help="write the rows as JSON here (and a .md table beside it)")
    p.add_argument("--projections", nargs="+", default=None, choices=["q", "k", "v", "o"],
                   help="beacon projections of the copy-initialised adapter (default: the BeaconConfig default)")
    p.add_argument("--random-init", action="store_true",
                   help="use a randomly initialised model of the --model's shape (timing needs no weights)")
    _add_model_args(p)
    p.set_defaults(func=cmd_bench)
    for name, sp in sub.choices.items():
        if name != "train":  # train has --recipe
            sp.add_argument("--config", default=None,
                            help="YAML file of this command's options (keys: option names); the command line wins")
            sp.set_defaults(subparser=sp)
    return parser


def apply_config(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse ``argv``; a subcommand's ``--config FILE`` (YAML: option names as keys, e.g.
    ``max_new_tokens: 64``) sets its defaults first, and options on the command line win."""
    args = parser.parse_args(argv)
    path = getattr(args, "config", None)
    if not path:
        return args
    from longctx.typed import read_yaml

    sub = args.subparser
    actions = {a.dest: a for a in sub._actions if a.dest not in ("help", "config")}
    data = {k.replace("-", "_"): v for k, v in read_yaml(path).items()}
    unknown = sorted(set(data) - set(actions))
    if unknown:
        raise ValueError(f"config {path}: unknown options {unknown} for 'longctx {args.command}' "
                         f"(known: {sorted(actions)})")
    for k, v in data.items():
        a = actions[k]
        items = v if isinstance(v, list) and a.nargs in ("+", "*") else [v]
        want = a.type if a.type in (int, float) else None
        if isinstance(v, list) and a.nargs not in ("+", "*"):
            raise ValueError(f"config {path}: {k} takes one value, got a list")
        if want is not None and any(isinstance(x, bool) or not isinstance(x, (int, float) if want is float else int)
                                    for x in items):
            raise ValueError(f"config {path}: {k}={v!r} is not of type {want.__name__}")
        if a.choices is not None and any(x not in a.choices for x in items):
            raise ValueError(f"config {path}: {k}={v!r} is not one of {list(a.choices)}")
        if a.nargs in ("+", "*") and not isinstance(v, list):
            data[k] = [v]
    sub.set_defaults(**data)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = apply_config(parser, argv)
    except ValueError as e:
        print(f"longctx: error: {e}", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except (ValueError, OSError, NotImplementedError) as e:
        print(f"longctx {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
