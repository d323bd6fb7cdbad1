"""Generation throughput: run_eval's generation path against a course-style ``generate`` loop.

    python bench/generate_throughput.py --device cuda                      # 500 MATH-500 prompts x 512 tokens
    python bench/generate_throughput.py --device cuda --variants paged hf  # compare project backends
    python bench/generate_throughput.py --device cpu --tiny --num_prompts 8 --max_new_tokens 8   # smoke test

The model is Qwen3-0.6B's architecture with random weights (``--config``), or real weights with ``--model``.
Random weights never emit a stop token on purpose, so every request is forced to generate exactly
``--max_new_tokens`` tokens (stop tokens are ignored in both the project path and the baseline).

Each project variant runs ``mathsft.generation.generate`` (what run_eval.py calls) ``--repeats`` times: the first
run is "cold" (CUDA graph capture / compilation / allocator warm-up included), the best later run is "warm". The
baseline is the loop a course notebook would write: ``model.generate`` on batches of 4 prompts with the dynamic
cache, timed on the first ``--baseline_batches`` batches and extrapolated to all prompts.

Writes ``generate_throughput.json`` and ``generate_throughput.md`` into a fresh scratch folder under ``runs/bench/``
unless ``--output_dir`` says otherwise (see ``bench/common.py``: ``bench/results/`` is for committed GPU results).
"""

from __future__ import annotations

import json
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import the project's own packages
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, HfArgumentParser

from bench.common import REPO, log, resolve_output_dir, sync, utc_timestamp
from mathsft import generation as gen
from mathsft.artifacts import write_json_atomic, write_text_atomic
from mathsft.data import load_problems
from mathsft.environment import device_name, resolve_device
from mathsft.errors import UserError, exit_on_user_error
from mathsft.template import render_generation_prompt

SHARED = REPO.parent / "shared" / "data"
SMOKE = REPO / "assets" / "smoke"
RESULT_JSON = "generate_throughput.json"
RESULT_MD = "generate_throughput.md"


@dataclass
class BenchArguments:
    device: str = field(default="auto", metadata={"help": "cpu, cuda or auto."})
    num_prompts: int = field(default=500, metadata={"help": "Prompts to generate for (MATH-500 test problems)."})
    max_new_tokens: int = field(default=512, metadata={"help": "Tokens generated per prompt (forced)."})
    tiny: bool = field(default=False, metadata={"help": "Tiny smoke model, tokenizer and data (CPU testing)."})
    config: str | None = field(
        default=None, metadata={"help": "Model config.json (default: Qwen3-0.6B-Base's, or the smoke model's)."}
    )
    model: str | None = field(default=None, metadata={"help": "Real checkpoint instead of random weights."})
    tokenizer: str | None = field(default=None, metadata={"help": "Tokenizer folder (default: next to --config)."})
    dataset: str | None = field(default=None, metadata={"help": "Problems (default: MATH-500 test, or smoke)."})
    variants: list[str] = field(
        default_factory=lambda: ["auto"],
        metadata={
            "help": "Project generation paths to time: backend[:attn_implementation][@batch_size], e.g. auto, "
            "paged, hf@256, paged:sdpa, paged:flash_varlen_torch. The first one is the headline result."
        },
    )
    batch_size: int | None = field(default=None, metadata={"help": "--batch_size of the project path."})
    repeats: int = field(default=2, metadata={"help": "Runs per variant: 1 cold + (repeats-1) warm."})
    baseline_batch_size: int = field(default=4, metadata={"help": "Batch size of the course-style loop."})
    baseline_batches: int = field(
        default=8, metadata={"help": "Batches of the course loop actually timed (0: all); the rest is extrapolated."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the random weights."})
    output_dir: str | None = field(
        default=None,
        metadata={"help": "Where the JSON and Markdown go (default: a new folder runs/bench/<device>_<date>). "
                  "bench/results/<device>_<date>/ is for committed GPU results and must be new."},
    )  # fmt: skip


def _defaults(args: BenchArguments) -> tuple[str | None, str, str]:
    """(config, tokenizer, dataset) paths: the smoke assets with --tiny, else Qwen3-0.6B-Base and MATH-500."""
    if args.tiny:
        return (
            args.config or str(SMOKE / "model" / "config.json"),
            args.tokenizer or str(SMOKE / "model"),
            args.dataset or str(SMOKE / "data"),
        )
    real = SHARED / "qwen3-0.6b-base"
    config = args.config or (str(real / "config.json") if (real / "config.json").is_file() else None)
    if config is None and args.model is None:
        raise UserError(f"no model config: pass --config or --model (looked for {real / 'config.json'})")
    tokenizer = args.tokenizer or args.model or str(Path(config).parent)
    dataset = args.dataset or (str(SHARED / "math500") if (SHARED / "math500").is_dir() else str(SMOKE / "data"))
    return config, tokenizer, dataset


def _build_model(args: BenchArguments, config_path: str | None, device: torch.device, dtype: torch.dtype) -> Any:
    if args.model:
        model, _ = gen.load_model_and_tokenizer(args.model, device=str(device), dtype=str(dtype).removeprefix("torch."))
        return model
    config = AutoConfig.from_pretrained(config_path)
    torch.manual_seed(args.seed)
    with torch.device(device):  # initialize directly on the GPU: no CPU copy of the weights
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


def _prompts(args: BenchArguments, tokenizer: Any, dataset: str) -> list[list[int]]:
    problems = load_problems(dataset, "test", ["problem"])["problem"]
    # Fewer problems than prompts (smoke data): cycle through them.
    texts = [render_generation_prompt(tokenizer, problems[i % len(problems)]) for i in range(args.num_prompts)]
    return [gen.encode_prompt(tokenizer, text) for text in texts]


def _time_project(
    model: Any, tokenizer: Any, prompts: list[list[int]], args: BenchArguments, variant: str
) -> dict[str, Any]:
    spec, _, size = variant.partition("@")
    backend, _, attn = spec.partition(":")
    batch_size = int(size) if size else args.batch_size
    settings = gen.SamplingSettings(max_new_tokens=args.max_new_tokens, ignore_eos=True)
    requests = [gen.GenerationRequest(key=i, prompt_ids=ids) for i, ids in enumerate(prompts)]
    runs = []
    tokens = 0
    full_length = True
    for _ in range(max(args.repeats, 1)):
        sync(model.device)
        start = time.perf_counter()
        results = [
            completion
            for batch in gen.generate(
                model, tokenizer, requests, settings, backend, batch_size, False, attn_implementation=attn or None
            )
            for _, completion in batch
        ]
        sync(model.device)
        runs.append(time.perf_counter() - start)
        tokens = sum(c.num_tokens for c in results)
        full_length = full_length and all(c.num_tokens == args.max_new_tokens for c in results)
    warm = min(runs[1:]) if len(runs) > 1 else None
    resolved = gen.resolve_backend(backend, model.device)
    return {
        "variant": variant,
        "backend": resolved,
        "attn_implementation": (attn or gen.paged_attention_for(model)) if resolved == "paged" else None,
        "batch_size": batch_size,
        "generated_tokens": tokens,
        "all_full_length": full_length,
        "wall_s_cold": round(runs[0], 3),
        "wall_s_warm": round(warm, 3) if warm is not None else None,
        "tokens_per_s_cold": round(tokens / runs[0], 1),
        "tokens_per_s_warm": round(tokens / warm, 1) if warm else None,
        "runs_s": [round(r, 3) for r in runs],
    }


def _time_baseline(model: Any, tokenizer: Any, prompts: list[list[int]], args: BenchArguments) -> dict[str, Any]:
    """The course loop: left-padded batches of 4 in dataset order, ``model.generate`` with the dynamic cache."""
    size = args.baseline_batch_size
    total_batches = math.ceil(len(prompts) / size)
    timed_batches = total_batches if args.baseline_batches <= 0 else min(args.baseline_batches, total_batches)
    pad = tokenizer.pad_token_id
    tokens = 0
    sync(model.device)
    start = time.perf_counter()
    for b in range(timed_batches):
        batch = prompts[b * size : (b + 1) * size]
        width = max(len(p) for p in batch)
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch], device=model.device)
        attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=model.device)
        with torch.no_grad():
            out = model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                max_new_tokens=args.max_new_tokens,
                min_new_tokens=args.max_new_tokens,  # forced full length, like the project path
                do_sample=False,
                pad_token_id=pad,
            )
        tokens += (out.shape[1] - width) * len(batch)
    sync(model.device)
    wall = time.perf_counter() - start
    timed_prompts = min(timed_batches * size, len(prompts))
    scale = len(prompts) / timed_prompts
    return {
        "batch_size": size,
        "cache": "dynamic",
        "timed_batches": timed_batches,
        "total_batches": total_batches,
        "extrapolated": timed_batches < total_batches,
        "timed_wall_s": round(wall, 3),
        "timed_generated_tokens": tokens,
        "wall_s": round(wall * scale, 3),
        "tokens_per_s": round(tokens / wall, 1),
    }


def _markdown(result: dict[str, Any]) -> str:
    env, setup, base = result["environment"], result["setup"], result["baseline"]
    lines = [
        "# Generation throughput",
        "",
        f"{setup['num_prompts']} prompts x {setup['max_new_tokens']} new tokens (forced), {setup['model']}, "
        f"{setup['dtype']}, on {env['device_name']} ({env['date']}; torch {env['torch']}, "
        f"transformers {env['transformers']}).",
        "",
        "| path | wall s (warm-up included) | wall s (warm) | generated tok/s (warm) | speedup vs course loop |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for run in result["project"]:
        if "error" in run:
            lines.append(f"| run_eval `{run['variant']}`: failed ({run['error'][:200]}) | | | | |")
            continue
        label = f"run_eval `{run['variant']}` ({run['backend']}"
        label += f", {run['attn_implementation']})" if run["attn_implementation"] else ")"
        warm_tps = run["tokens_per_s_warm"] or run["tokens_per_s_cold"]
        lines.append(
            f"| {label} | {run['wall_s_cold']:.1f} | {run['wall_s_warm'] or float('nan'):.1f} | {warm_tps:,.0f} | "
            f"{run['speedup_warm'] or run['speedup_cold']:.1f}x |"
        )
    note = (
        f"timed on the first {base['timed_batches']} of {base['total_batches']} batches, extrapolated"
        if base["extrapolated"]
        else "all batches timed"
    )
    lines.append(
        f"| course loop (generate, batch {base['batch_size']}, dynamic cache; {note}) | {base['wall_s']:.1f} | "
        f"{base['wall_s']:.1f} | {base['tokens_per_s']:,.0f} | 1.0x |"
    )
    lines += [
        "",
        "Warm-up included = first run (CUDA graph capture, compilation, allocator growth); warm = best later run.",
        "Speedup = course-loop wall time / project wall time (warm), from the same run of this script.",
        "",
    ]
    return "\n".join(lines)


@exit_on_user_error
def main(argv: list[str] | None = None) -> dict[str, Any]:
    (args,) = HfArgumentParser(BenchArguments).parse_args_into_dataclasses(args=argv)
    device = resolve_device(args.device)
    out_dir = resolve_output_dir(args.output_dir, device, device_name(device), (RESULT_JSON, RESULT_MD))
    dtype = gen.resolve_dtype("auto", device)
    config_path, tokenizer_path, dataset = _defaults(args)
    tokenizer = gen.load_tokenizer(args.model or tokenizer_path)
    model = _build_model(args, config_path, device, dtype)
    model.generation_config = transformers.GenerationConfig(
        eos_token_id=gen.stop_token_ids(tokenizer), pad_token_id=tokenizer.pad_token_id
    )
    prompts = _prompts(args, tokenizer, dataset)

    result: dict[str, Any] = {
        "environment": {
            "date": utc_timestamp(),
            "device_name": device_name(device),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
        },
        "setup": {
            "model": args.model or f"random weights, {config_path}",
            "tokenizer": tokenizer_path if not args.model else args.model,
            "dataset": dataset,
            "num_prompts": len(prompts),
            "max_new_tokens": args.max_new_tokens,
            "dtype": str(dtype).removeprefix("torch."),
            "prompt_tokens_mean": round(sum(map(len, prompts)) / len(prompts), 1),
            "prompt_tokens_max": max(map(len, prompts)),
        },
        "arguments": asdict(args),
        "project": [],
    }
    log("timing the course-style loop ...")
    result["baseline"] = _time_baseline(model, tokenizer, prompts, args)
    log(json.dumps(result["baseline"]))
    for variant in args.variants:
        log(f"timing run_eval path '{variant}' ...")
        try:
            run = _time_project(model, tokenizer, prompts, args, variant)
        except Exception as err:  # one failing variant must not lose the others' numbers
            if len(args.variants) == 1:
                raise
            run = {"variant": variant, "error": f"{type(err).__name__}: {err}"}
            if device.type == "cuda":
                torch.cuda.empty_cache()
        else:
            run["speedup_cold"] = round(result["baseline"]["wall_s"] / run["wall_s_cold"], 2)
            run["speedup_warm"] = (
                round(result["baseline"]["wall_s"] / run["wall_s_warm"], 2) if run["wall_s_warm"] else None
            )
        log(json.dumps(run))
        result["project"].append(run)
        _write(out_dir, result)  # after each variant: a later crash or timeout keeps what was measured
    print(_markdown(result))
    log(f"wrote {out_dir / RESULT_JSON} and {RESULT_MD}")
    return result


def _write(out_dir: Path, result: dict[str, Any]) -> None:
    write_json_atomic(out_dir / RESULT_JSON, result)
    write_text_atomic(out_dir / RESULT_MD, _markdown(result))


if __name__ == "__main__":
    main()
