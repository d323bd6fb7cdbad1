"""Training throughput: the project's SFTTrainer recipes against the course's plain PyTorch loop, and the optional
speed-ups (``bench/switches.py``) against the plain recipes.

    python bench/train_throughput.py                                      # 3 methods x (course, fast, lean), one GPU
    python bench/train_throughput.py --configs fast fast+varlen lean+mb4/adamw --methods adamw,lora
    python bench/train_throughput.py --device cpu --tiny --steps 2 --warmup_steps 1   # smoke test on CPU

A configuration is ``setup[+switch...][/method,...]``: ``course`` (the course notebook's loop,
``bench/course_loop.py``), ``fast`` or ``lean`` (the recipes in ``recipes/qwen3-0.6b-base[-16gb]/<method>.yaml``, run
through the real training code, ``bench/project_path.py``), each timed for ``--warmup_steps`` + ``--steps`` optimizer
steps on the same MATH train examples. Switches (varlen, liger, compile, bf16base, nodropout, mb4) are off in the
recipes; the bench compares each one's per-step training loss with the plain recipe of the same method over the same
steps.

The model is Qwen3-0.6B's architecture with random weights (``--config_dir``), saved with the real tokenizer into a
temporary folder so the project path loads it by path like a checkpoint; ``--model`` loads a checkpoint instead.
Throughput counts non-padding tokens (prompt and completion) between the end of the last warm-up step and the end of
the last timed step (data loading, logging and optimizer included). MFU = tokens/s x 6N (4N for LoRA: no weight
gradients for the frozen base) / the bf16 matmul peak measured in the same run; N counts every parameter once (the
tied embedding once, as the LM-head matmul); attention-score FLOPs and checkpoint recomputation are not counted.

Writes ``train_throughput.json`` and ``train_throughput.md`` after every configuration, so a crash or timeout keeps
what was measured; a failing configuration (e.g. out of memory) is recorded and the bench goes on. Results go to a
fresh scratch folder under ``runs/bench/`` unless ``--output_dir`` says otherwise (see ``bench/common.py``).
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import shlex
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import the project's own packages
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from transformers import AutoTokenizer, HfArgumentParser

from bench.common import GIB, REPO, log, parse_names, resolve_output_dir, sync, utc_timestamp
from bench.course_loop import CourseExample, CourseSettings, course_examples, run_course
from bench.data_cache import DataCache, NoCache
from bench.project_path import parse_recipe, recipe_argv, run_project
from bench.sources import Sources, count_parameters, resolve_sources, save_random_model, train_examples
from bench.switches import SWITCHES, PlannedRun, expand_configurations, plan_runs
from bench.train_report import RESULT_JSON, RESULT_MD, markdown, write_results
from mathsft.callbacks import peak_rss_gib
from mathsft.environment import device_name, library_versions, resolve_device
from mathsft.errors import UserError, exit_on_user_error
from mathsft.methods import METHOD_NAMES, get_method


@dataclass
class BenchArguments:
    device: str = field(default="auto", metadata={"help": "cuda, cpu or auto."})
    tiny: bool = field(
        default=False, metadata={"help": "Tiny smoke model (assets/smoke/model, with its tokenizer), for CPU tests."}
    )
    methods: str = field(default=",".join(METHOD_NAMES), metadata={"help": "Comma-separated subset of the methods."})
    configs: list[str] = field(
        default_factory=lambda: ["course", "fast", "lean"],
        metadata={"help": "Configurations, in order: setup[+switch...][/method,...], e.g. course fast fast+varlen "
                  f"lean+mb4/adamw. Setups: course, fast, lean; switches: {', '.join(SWITCHES)}."},
    )  # fmt: skip
    steps: int = field(default=20, metadata={"help": "Optimizer steps timed per configuration."})
    warmup_steps: int = field(default=3, metadata={"help": "Optimizer steps run before timing (at least 1)."})
    time_budget_s: float | None = field(
        default=None, metadata={"help": "Start no new configuration after this many seconds (the rest: skipped)."}
    )
    config_dir: str | None = field(
        default=None,
        metadata={"help": "Folder with Qwen3-0.6B-Base's config.json (default: ../shared/data or .gpu_data)."},
    )
    tokenizer_dir: str | None = field(default=None, metadata={"help": "Tokenizer folder (default: --config_dir)."})
    data_dir: str | None = field(
        default=None,
        metadata={"help": "MATH train data: a folder with train.jsonl (default: ../shared/data/math500 or .gpu_data)."},
    )
    model: str | None = field(default=None, metadata={"help": "A checkpoint (with tokenizer) instead of random."})
    max_train_samples: int | None = field(
        default=None,
        metadata={"help": "Training examples prepared per setup (default: enough for the timed steps, >= 1000)."},
    )
    fast_recipes: str = field(default="recipes/qwen3-0.6b-base", metadata={"help": "Folder of the fast recipes."})
    lean_recipes: str = field(default="recipes/qwen3-0.6b-base-16gb", metadata={"help": "Folder of the lean recipes."})
    recipe_overrides: str = field(
        default="", metadata={"help": "Extra train_sft.py arguments for the fast and lean setups, e.g. '--seed 1'."}
    )
    course_max_length: int = field(default=512, metadata={"help": "Course loop: longest example kept (tokens)."})
    course_batch_size: int = field(default=2, metadata={"help": "Course loop: examples per micro-batch."})
    course_grad_accum: int = field(default=4, metadata={"help": "Course loop: micro-batches per optimizer step."})
    matmul_size: int = field(default=8192, metadata={"help": "Side of the bf16 matmul timed for the peak."})
    cache_data: bool = field(
        default=True,
        metadata={"help": "Tokenize the project's data once and reuse it across configurations (same data settings)."},
    )
    seed: int = field(default=0, metadata={"help": "Seed of the random weights and of the course's shuffling."})
    output_dir: str | None = field(
        default=None,
        metadata={"help": "Where the JSON and Markdown go (default: a new folder runs/bench/<device>_<date>). "
                  "bench/results/<device>_<date>/ is for committed GPU results and must be new."},
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------------
# Devices, memory and the matmul peak


def free_memory(device: torch.device) -> None:
    """Drop everything the previous configuration left (reference cycles included) and reset the peaks."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def memory_peaks(device: torch.device) -> dict[str, float | None]:
    if device.type == "cuda":
        sync(device)
        return {
            "peak_allocated_gib": round(torch.cuda.max_memory_allocated(device) / GIB, 3),
            "peak_reserved_gib": round(torch.cuda.max_memory_reserved(device) / GIB, 3),
            "peak_rss_gib": None,
        }
    # ru_maxrss cannot be reset: on CPU this is the process's peak so far, not the configuration's.
    return {"peak_allocated_gib": None, "peak_reserved_gib": None, "peak_rss_gib": round(peak_rss_gib(), 3)}


def matmul_peak_tflops(size: int, device: torch.device) -> float:
    """Best of a few timings of a square bf16 matmul: the ceiling that MFU is measured against."""
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    c = torch.empty(size, size, device=device, dtype=torch.bfloat16)
    for _ in range(5):  # clocks up, cuBLAS heuristics chosen
        torch.matmul(a, b, out=c)
    iters, best = 20, float("inf")
    for _ in range(3):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            torch.matmul(a, b, out=c)
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end) / 1e3)
    del a, b, c
    return 2 * size**3 * iters / best / 1e12


# ---------------------------------------------------------------------------------------------------------------------
# One bench run


@dataclass
class Bench:
    """Everything one run of the bench shares across its configurations."""

    args: BenchArguments
    device: torch.device
    sources: Sources
    work: Path
    out_dir: Path
    max_samples: int
    started: float = field(default_factory=time.perf_counter)
    course: list[CourseExample] = field(default_factory=list)
    pad_id: int = 0

    @property
    def steps(self) -> tuple[int, int]:
        return self.args.warmup_steps, self.args.steps

    def recipe(self, setup: str, method: str) -> Path:
        folder = Path(self.args.fast_recipes if setup == "fast" else self.args.lean_recipes)
        return (folder if folder.is_absolute() else REPO / folder) / f"{method}.yaml"  # relative to the repository

    def argv(self, run: PlannedRun) -> list[str]:
        c = run.configuration
        out = self.work / f"{c.label}-{c.method}"
        argv = recipe_argv(self.recipe(c.setup, c.method), self.sources.model_path, self.sources.data_path, out,
                           sum(self.steps), self.max_samples, self.device)  # fmt: skip
        return argv + c.overrides() + shlex.split(self.args.recipe_overrides)

    def over_budget(self) -> bool:
        budget = self.args.time_budget_s
        return budget is not None and time.perf_counter() - self.started > budget


def run_configuration(bench: Bench, run: PlannedRun) -> dict[str, Any]:
    """Run one configuration; any failure (e.g. out of memory) is recorded in the entry, not raised."""
    c = run.configuration
    reference = run.reference.label if run.reference else None
    entry: dict[str, Any] = {
        "configuration": c.label, "setup": c.setup, "switches": list(c.switches), "method": c.method,
        "reference": reference,
    }  # fmt: skip
    if run.skip_reason or bench.over_budget():
        return entry | {"status": "skipped", "skip_reason": run.skip_reason or "time budget spent", "error": None}
    free_memory(bench.device)
    if bench.device.type == "cuda":
        entry["allocated_at_start_gib"] = round(torch.cuda.memory_allocated(bench.device) / GIB, 3)
    try:
        if c.setup == "course":
            a = bench.args
            settings = CourseSettings(a.course_batch_size, a.course_grad_accum, a.course_max_length, a.seed)
            measured = run_course(get_method(c.method), bench.sources.model_path, bench.course, bench.pad_id,
                                  bench.steps, settings, bench.device)  # fmt: skip
        else:
            with _switch_contexts(c.switches):
                measured = run_project(c, bench.recipe(c.setup, c.method), bench.argv(run), bench.args.warmup_steps,
                                       bench.device)  # fmt: skip
        return entry | {"status": "ok", "error": None, **measured, **memory_peaks(bench.device)}
    except Exception as err:  # one failing configuration (e.g. OOM) must not lose the others
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
        return entry | {"status": "error", "error": f"{type(err).__name__}: {first_line}",
                        "traceback": traceback.format_exc(limit=-6), **memory_peaks(bench.device)}  # fmt: skip


@contextlib.contextmanager
def _switch_contexts(names: tuple[str, ...]) -> Iterator[None]:
    """What the configuration's switches set up around building and training (patches, cache resets)."""
    with contextlib.ExitStack() as stack:
        for name in names:
            stack.enter_context(SWITCHES[name].around())
        yield


# ---------------------------------------------------------------------------------------------------------------------
# Set-up and the main loop


def _quiet_libraries() -> None:
    import datasets
    import transformers

    logging.getLogger("transformers").setLevel(logging.ERROR)
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


def _check_recipes(bench: Bench, runs: list[PlannedRun]) -> None:
    """A missing recipe or a bad override fails now, in one line, not after minutes of runs."""
    for run in runs:
        if run.configuration.setup != "course":
            parse_recipe(bench.argv(run))


def _prepare_models_and_data(bench: Bench, runs: list[PlannedRun]) -> float | None:
    """The matmul peak (GPU), the random model (saved once, loaded by path) and the course loop's examples."""
    peak = None
    if bench.device.type == "cuda":
        log(f"timing a {bench.args.matmul_size}^3 bf16 matmul ...")
        peak = round(matmul_peak_tflops(bench.args.matmul_size, bench.device), 1)
        free_memory(bench.device)
    if bench.sources.random_weights:
        log("building the random model ...")
        save_random_model(bench.sources.config_path, bench.sources.tokenizer_path, Path(bench.sources.model_path),
                          bench.args.seed, bench.device)  # fmt: skip
        free_memory(bench.device)
    if any(run.configuration.setup == "course" and not run.skip_reason for run in runs):
        log("tokenising the course loop's examples ...")
        tokenizer = AutoTokenizer.from_pretrained(bench.sources.model_path)
        bench.pad_id = tokenizer.pad_token_id
        bench.course, _ = course_examples(
            tokenizer, train_examples(bench.sources.data_path, bench.max_samples), bench.args.course_max_length
        )
    return peak


def _result_skeleton(bench: Bench, peak: float | None, planned: int) -> dict[str, Any]:
    return {
        "environment": {
            "date": utc_timestamp(),
            "device_name": device_name(bench.device),
            **library_versions(),
            "cuda": torch.version.cuda,
        },
        "device": bench.device.type,
        "matmul_peak_tflops": peak,
        "model": {
            "description": bench.sources.model_description,
            "parameters": count_parameters(bench.sources.config_path),
            "N_used": "all parameters once (embedding tied to the LM head counted once); 6N per token, 4N LoRA",
        },
        "data": {
            "data_path": bench.sources.data_path,
            "tokenizer": bench.sources.tokenizer_path,
            "max_train_samples": bench.max_samples,
            "course_examples": len(bench.course),
        },
        "arguments": asdict(bench.args),
        "configurations_planned": planned,
        "results": [],
    }


def _run_all(bench: Bench, runs: list[PlannedRun], result: dict[str, Any]) -> None:
    with DataCache() if bench.args.cache_data else NoCache() as cache:
        for run in runs:
            log(f"[{run.configuration.label} / {run.configuration.method}] ...")
            entry = run_configuration(bench, run)
            log(json.dumps({k: v for k, v in entry.items() if k not in ("traceback", "step_losses")}))
            result["results"].append(entry)
            result["data_cache_hits"] = cache.hits
            write_results(bench.out_dir, result)  # after each configuration: a crash or timeout keeps the rest
    free_memory(bench.device)


def _bench_from(args: BenchArguments, work: Path) -> tuple[Bench, list[PlannedRun]]:
    if args.warmup_steps < 1 or args.steps < 1:
        raise UserError("--warmup_steps and --steps must be at least 1 (timing starts at the end of a warm-up step)")
    methods = parse_names(args.methods, METHOD_NAMES, "--methods")
    device = resolve_device(args.device)
    runs = plan_runs(expand_configurations(args.configs, methods), device)
    sources = resolve_sources(args.tiny, args.model, args.config_dir, args.tokenizer_dir, args.data_dir)
    out_dir = resolve_output_dir(args.output_dir, device, device_name(device), (RESULT_JSON, RESULT_MD))
    # ~50 examples make one 16-row step of the recipes; 80 per step leaves room for the examples max_length drops.
    max_samples = args.max_train_samples or max(1000, 80 * (args.warmup_steps + args.steps))
    return Bench(args, device, sources, work, out_dir, max_samples), runs


@exit_on_user_error
def main(argv: list[str] | None = None) -> dict[str, Any]:
    (args,) = HfArgumentParser(BenchArguments).parse_args_into_dataclasses(args=argv)
    _quiet_libraries()
    with tempfile.TemporaryDirectory(prefix="train_throughput_") as work:
        bench, runs = _bench_from(args, Path(work))
        if bench.sources.random_weights:
            bench.sources.model_path = str(bench.work / "model")  # saved there before the first run
        _check_recipes(bench, runs)
        peak = _prepare_models_and_data(bench, runs)
        result = _result_skeleton(bench, peak, len(runs))
        log(f"results: {bench.out_dir}")
        _run_all(bench, runs, result)
    print(markdown(result))
    log(f"wrote {bench.out_dir / RESULT_JSON} and {RESULT_MD}")
    return result


if __name__ == "__main__":
    main()
