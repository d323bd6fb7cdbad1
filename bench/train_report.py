"""The training bench's derived figures (speedup, MFU, memory verdicts, loss equality) and its Markdown table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.switches import SWITCHES
from mathsft.artifacts import write_json_atomic, write_text_atomic
from mathsft.methods import get_method

RESULT_JSON = "train_throughput.json"
RESULT_MD = "train_throughput.md"
# Two configurations "train the same" when their per-step losses over the same steps differ by at most this,
# relative: bf16 autocast rounds each element to ~4e-3, and a step's loss averages ~16k token losses.
LOSS_EQUAL_RTOL = 1e-3


def loss_comparison(losses: list[float], reference: list[float]) -> dict[str, Any]:
    """Max absolute and relative difference of two runs' per-step losses over their common steps."""
    pairs = list(zip(losses, reference, strict=False))
    if not pairs:
        return {"loss_max_abs_diff": None, "loss_max_rel_diff": None, "loss_equal": None}
    abs_diff = max(abs(a - b) for a, b in pairs)
    rel_diff = max(abs(a - b) / max(abs(b), 1e-12) for a, b in pairs)
    return {
        "loss_steps_compared": len(pairs),
        "loss_max_abs_diff": abs_diff,
        "loss_max_rel_diff": rel_diff,
        "loss_equal": rel_diff <= LOSS_EQUAL_RTOL,
    }


def _compare_losses(results: list[dict[str, Any]]) -> None:
    by_label = {(r["configuration"], r["method"]): r for r in results if r["status"] == "ok"}
    for r in results:
        reference = by_label.get((r.get("reference"), r["method"])) if r.get("reference") else None
        if r["status"] == "ok" and reference is not None:
            r |= loss_comparison(r["step_losses"], reference["step_losses"])


def add_derived(result: dict[str, Any]) -> None:
    """Speedup vs the course loop of the same method (same run), MFU, the lean memory verdicts, loss equality."""
    peak = result["matmul_peak_tflops"]
    n_params = result["model"]["parameters"]["N"]
    course = {r["method"]: r for r in result["results"] if r["setup"] == "course" and r["status"] == "ok"}
    for r in result["results"]:
        method = get_method(r["method"])
        r["flops_per_token"] = (4 if method.peft else 6) * n_params
        ok = r["status"] == "ok" and bool(r.get("tokens_per_s"))
        r["mfu"] = round(r["tokens_per_s"] * r["flops_per_token"] / (peak * 1e12), 4) if ok and peak else None
        base = course.get(r["method"])
        r["speedup_vs_course"] = round(r["tokens_per_s"] / base["tokens_per_s"], 2) if ok and base else None
        if r["setup"] == "lean":
            r["memory_target_gib"] = method.memory_target_gib
            alloc = r.get("peak_allocated_gib")
            r["fits_target"] = alloc <= method.memory_target_gib if alloc is not None else None
    _compare_losses(result["results"])


def _fmt(value: Any, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def _millions(n: int) -> str:
    return f"{n / 1e6:,.1f}M" if n >= 1e6 else f"{n:,}"


def _header(result: dict[str, Any]) -> list[str]:
    env, model, data, arguments = result["environment"], result["model"], result["data"], result["arguments"]
    peak, params = result["matmul_peak_tflops"], model["parameters"]
    return [
        "# Training throughput",
        "",
        f"{env['device_name']}, {env['date']}; torch {env['torch']}, transformers {env['transformers']}, "
        f"trl {env['trl']}, peft {env['peft']}.",
        f"bf16 matmul peak ({arguments['matmul_size']}^3, measured): "
        + (f"{peak:,.0f} TFLOP/s." if peak else "not measured (CPU)."),
        f"Model: {model['description']}; N = {_millions(params['N'])} parameters "
        f"({_millions(params['non_embedding'])} non-embedding + {_millions(params['embedding'])} embedding"
        f"{', tied to the LM head' if params['tied_embeddings'] else ''}).",
        f"Data: {data['data_path']} (up to {data['max_train_samples']} training examples of the seeded split), "
        f"tokenizer {data['tokenizer']}. {arguments['warmup_steps']} warm-up + {arguments['steps']} timed optimizer "
        "steps per configuration.",
        "",
    ]


def _memory_cell(r: dict[str, Any], cuda: bool) -> str:
    if cuda:
        return f"{_fmt(r.get('peak_allocated_gib'), '.2f')} / {_fmt(r.get('peak_reserved_gib'), '.2f')}"
    return _fmt(r.get("peak_rss_gib"), ".2f")


def _row(r: dict[str, Any], cuda: bool, columns: int) -> str:
    if r["status"] != "ok":
        verdict = "skipped" if r["status"] == "skipped" else "failed"
        reason = str(r.get("error") or r.get("skip_reason") or "").replace("|", "/").replace("\n", " ")[:160]
        return f"| {r['configuration']} | {r['method']} | {verdict}: {reason} |" + " |" * (columns - 3)
    target = "-"
    if r.get("memory_target_gib") is not None:
        verdict = {True: "fits", False: "over", None: "n/a"}[r["fits_target"]]
        target = f"{verdict} {r['memory_target_gib']:.0f} GiB"
    loss = "-"
    if r.get("loss_max_rel_diff") is not None:
        loss = f"{r['loss_max_rel_diff']:.1e} ({'equal' if r['loss_equal'] else 'differs'})"
    return (
        f"| {r['configuration']} | {r['method']} | {_fmt(r['tokens_per_s'], ',.0f')} | "
        f"{_fmt(r['speedup_vs_course'], '.2f', 'x')} | {_fmt(r['mfu'], '.1%')} | "
        f"{r['step_s_median']:.3f} / {r['step_s_max']:.3f} | {_memory_cell(r, cuda)} | {target} | {loss} | "
        f"{_fmt(r['tokens_per_step'], ',.0f')} | {r['steps_timed']} |"
    )


def markdown(result: dict[str, Any]) -> str:
    cuda = result["device"] == "cuda"
    memory = "peak alloc / reserved GiB" if cuda else "peak RSS GiB (process so far)"
    columns = ["configuration", "method", "tokens/s", "speedup vs course", "MFU", "step s median / max", memory,
               "lean target", "loss vs plain recipe (max rel. diff)", "tokens/step", "steps timed"]  # fmt: skip
    lines = _header(result) + ["| " + " | ".join(columns) + " |", "| --- | --- |" + " ---: |" * 9]
    lines += [_row(r, cuda, len(columns)) for r in result["results"]]
    arguments = result["arguments"]
    used = sorted({s for r in result["results"] for s in r["configuration"].split("+")[1:]})
    lines += [
        "",
        f"- course: plain PyTorch, bf16 weights, batch {arguments['course_batch_size']} x accumulation "
        f"{arguments['course_grad_accum']}, padded to the longest, max_length {arguments['course_max_length']} "
        "(longer examples dropped), loss from full logits.",
        f"- fast: `{arguments['fast_recipes']}/<method>.yaml`; lean: `{arguments['lean_recipes']}/<method>.yaml`, run "
        "through `mathsft.training.build_trainer` (SFTTrainer) unchanged except for max_steps, no evaluation, no "
        "checkpoints.",
        *[f"- +{name}: {SWITCHES[name].description}." for name in used],
        "- tokens/s: non-padding tokens / wall time from the end of the last warm-up step to the end of the last "
        "timed step. Speedup: against the course loop of the same method in this run.",
        "- MFU: tokens/s x 6N (4N for LoRA) / the matmul peak above. Lean target: peak allocated memory against the "
        "method's target (mathsft.methods); the CUDA context (~0.5 GiB) comes on top.",
        f"- loss vs plain recipe: the largest relative difference of the per-step training loss against the same "
        f"method's plain setup over the same steps and data; 'equal' when <= {LOSS_EQUAL_RTOL:g}.",
        "",
    ]
    return "\n".join(lines)


def write_results(out_dir: Path, result: dict[str, Any]) -> None:
    """Derive, then write the JSON and the Markdown atomically (after every configuration: a crash keeps the rest)."""
    add_derived(result)
    write_json_atomic(out_dir / RESULT_JSON, result)
    write_text_atomic(out_dir / RESULT_MD, markdown(result))
