"""The evaluation pipeline behind ``run_eval.py``: problems -> prompts -> generations -> grades -> summary.

Outputs under ``--output`` (see ``docs/evaluation.md``):

- ``eval_config.json``: every setting that changes the outputs, written at the start. A rerun with the same
  settings resumes; a rerun with other settings is refused (use a new ``--output`` or ``--overwrite``).
- ``generations.jsonl``: one graded row per (problem, sample), appended, flushed and fsync'd as each batch
  finishes, so a crash or Ctrl-C loses at most the batch in flight. A half-written last line is dropped on resume.
- ``summary.json``: ``mathsft.scoring.summarize`` of all rows plus run metadata, also printed as a table.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, cast

import torch

from mathsft import artifacts, ownership
from mathsft.artifacts import EVAL_CONFIG, EVAL_SUMMARY, GENERATIONS, EvalSummary, JsonlAppender, read_jsonl_rows
from mathsft.data import DEFAULT_DATASET, load_problems
from mathsft.errors import UserError, reject_unknown_keys
from mathsft.generation import BACKENDS
from mathsft.grading import validate_grader_timeout
from mathsft.identity import exclusive_output, first_difference, normalized
from mathsft.shards import ProcessGroup, Shard, current_shard, merge_shards

# Test hook: raise KeyboardInterrupt after this many batches were written (simulates Ctrl-C in the e2e tests).
_INTERRUPT_ENV = "MATHSFT_EVAL_INTERRUPT_AFTER_BATCHES"


@dataclass
class EvalArguments:
    """Arguments of ``run_eval.py`` (generate, grade and summarize)."""

    model: str = field(metadata={"help": "Hub id or local checkpoint folder of the model (the base, with --adapter)."})
    output: str = field(metadata={"help": "Output folder: generations.jsonl, summary.json, eval_config.json."})
    adapter: str | None = field(default=None, metadata={"help": "A saved LoRA adapter folder, merged into --model."})
    dataset: str = field(
        default=DEFAULT_DATASET, metadata={"help": "Hub dataset id, a local folder with <split>.jsonl, or a file."}
    )
    split: str = field(default="test", metadata={"help": "Dataset split."})
    limit: int | None = field(default=None, metadata={"help": "Evaluate only the first N problems."})
    problem_column: str = field(default="problem", metadata={"help": "Column holding the problem text."})
    answer_column: str = field(default="answer", metadata={"help": "Column holding the reference answer."})
    system_prompt: str | None = field(
        default=None, metadata={"help": "Optional system turn; must match the one used in training (default none)."}
    )
    num_samples: int = field(default=1, metadata={"help": "Samples per problem (needs --temperature > 0 if > 1)."})
    temperature: float = field(default=0.0, metadata={"help": "Sampling temperature; 0 is greedy decoding."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling threshold (with --temperature > 0)."})
    max_new_tokens: int = field(default=1024, metadata={"help": "Generation budget per sample."})
    seed: int = field(default=42, metadata={"help": "Random seed (sampling)."})
    backend: str = field(
        default="auto",
        metadata={
            "help": "auto (paged on CUDA, hf on CPU), hf (generate, dynamic cache), static (generate, static "
            "compiled cache) or paged (continuous batching with a paged KV cache).",
            "choices": list(BACKENDS),
        },
    )
    batch_size: int | None = field(
        default=None,
        metadata={
            "help": "hf/static: prompts per batch (default 128 on GPU, 8 on CPU); paged: max concurrent "
            "sequences (default: sized from GPU memory)."
        },
    )
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N."})
    dtype: str = field(
        default="auto",
        metadata={"help": "auto (bf16 on GPU, fp16 without bf16 support, fp32 on CPU), bfloat16, float16, float32."},
    )
    attn_implementation: str | None = field(
        default=None, metadata={"help": "Attention implementation passed to from_pretrained (e.g. sdpa)."}
    )
    overwrite: bool = field(
        default=False, metadata={"help": "Start over: remove this evaluation's own files in --output (nothing else)."}
    )
    grader_timeout: float = field(default=5.0, metadata={"help": "Seconds allowed to grade one answer."})
    grader_workers: int | None = field(default=None, metadata={"help": "Grading processes (default: CPU count)."})
    progress: bool = field(default=True, metadata={"help": "Show a progress bar."})


@dataclass
class GradeArguments:
    """Arguments of ``run_eval.py grade`` (re-grade existing completions, no model)."""

    input: str = field(
        metadata={"help": "JSONL with 'completion' and 'gold' (optional id, sample, subject, level, finish_reason)."}
    )
    output: str | None = field(default=None, metadata={"help": "Scored JSONL (default: <input>.scored.jsonl)."})
    grader_timeout: float = field(default=5.0, metadata={"help": "Seconds allowed to grade one answer."})
    grader_workers: int | None = field(default=None, metadata={"help": "Grading processes (default: CPU count)."})


# Settings that change what is generated or how it is scored: a resumed run must match them exactly.
GUARDED_SETTINGS = (
    "model", "adapter", "dataset", "split", "limit", "problem_column", "answer_column", "system_prompt",
    "num_samples", "temperature", "top_p", "max_new_tokens", "seed",
)  # fmt: skip


def validate_eval_args(args: EvalArguments) -> None:
    """Checks that argparse cannot express; each failure is one line naming the option and its range."""
    if not (artifacts.is_finite_number(args.temperature) and args.temperature >= 0):
        raise UserError(f"--temperature must be a finite number >= 0, got {args.temperature!r}")
    if not (artifacts.is_finite_number(args.top_p) and 0 < args.top_p <= 1):
        raise UserError(f"--top_p must be in (0, 1], got {args.top_p!r}")
    for name in ("num_samples", "max_new_tokens"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} must be >= 1, got {getattr(args, name)}")
    for name in ("limit", "batch_size", "grader_workers"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UserError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.num_samples > 1 and args.temperature == 0:
        raise UserError(
            f"--num_samples {args.num_samples} with greedy decoding (--temperature 0) gives identical samples; "
            "set --temperature (e.g. 0.7) or use --num_samples 1"
        )
    if not 0 <= args.seed < 2**32:  # torch and numpy take 32-bit unsigned seeds
        raise UserError(f"--seed must be an integer in [0, 2**32 - 1], got {args.seed}")
    validate_grader_timeout(args.grader_timeout, key="--grader_timeout")


# ----------------------------------------------------------------------------------------------------------------
# Settings as a mapping (the study's `eval:` section)
# ----------------------------------------------------------------------------------------------------------------

# The study sets these itself for every evaluation stage.
STUDY_RESERVED_EVAL_KEYS = ("adapter", "output", "overwrite")


def eval_args_from_mapping(settings: dict[str, Any], where: str) -> EvalArguments:
    """``EvalArguments`` from a mapping of ``run_eval.py`` options (unknown keys get a "did you mean")."""
    known = [f.name for f in fields(EvalArguments) if f.name not in STUDY_RESERVED_EVAL_KEYS]
    reject_unknown_keys(settings, known, "run_eval.py option", where)
    from mathsft.cli import check_config_types

    check_config_types(settings, (EvalArguments,), where, text_converts=False)  # used as is: no parser converts text
    try:
        args = EvalArguments(**({"model": "-", "output": "-"} | settings))
    except TypeError as err:
        raise UserError(f"bad evaluation settings in {where}: {err}") from err
    validate_eval_args(args)
    return args


# ----------------------------------------------------------------------------------------------------------------
# Step 1: prepare the output folder and the resume state
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class EvalRun:
    """An evaluation ready to generate: resolved device, dtype and backend, the problems, and what is left to do."""

    args: EvalArguments
    output: Path
    device: torch.device
    dtype: torch.dtype
    backend: str
    examples: list[dict[str, Any]]
    resumed_rows: int
    todo: list[tuple[int, int]]  # this process's (problem index, sample) pairs without a row yet
    shard: Shard = field(default_factory=Shard)
    total_todo: int = 0  # pairs without a row yet, over all processes
    settings: dict[str, Any] = field(default_factory=dict)  # the contents of eval_config.json (main process)

    @property
    def generations_path(self) -> Path:
        return self.output / GENERATIONS

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")


def eval_settings(args: EvalArguments, dtype: str) -> dict[str, Any]:
    """The contents of ``eval_config.json``: every setting that changes what is generated or how it is graded."""
    from mathsft.grading import grader_identity
    from mathsft.identity import data_identity, model_identity

    settings = {name: getattr(args, name) for name in GUARDED_SETTINGS}
    settings["dtype"] = dtype
    # By content: other weights under the same path (a retrained run) are another evaluation.
    settings["model_weights"] = model_identity(args.model)
    settings["adapter_weights"] = model_identity(args.adapter)
    base = adapter_base(args.model) if args.adapter is None else None
    if base is not None:  # --model is an adapter folder: its base decides the outputs as much as the adapter does
        settings["adapter_base"] = {"name": base, "weights": model_identity(base)}
    settings["data"] = data_identity(args.dataset)
    settings["grader"] = grader_identity()
    settings["grader_timeout"] = args.grader_timeout
    return settings


def adapter_base(model: str) -> str | None:
    """The base model named in ``adapter_config.json`` when ``model`` is a PEFT adapter folder (evaluated as that
    base with the adapter merged in), else None."""
    from mathsft.paths import looks_like_local_path

    config = Path(model).expanduser() / "adapter_config.json"
    if not config.is_file():
        return None
    base = (artifacts.read_json(config) or {}).get("base_model_name_or_path")
    if not isinstance(base, str) or not base.strip():
        raise UserError(f"{config} names no base model (base_model_name_or_path); "
                        "pass the base as --model and this folder as --adapter")  # fmt: skip
    if looks_like_local_path(base) and not Path(base).expanduser().exists():
        raise UserError(f"the base model of the adapter {model} ({config}: base_model_name_or_path) is not found: "
                        f"{base}; pass the base as --model and this folder as --adapter")  # fmt: skip
    return base


def check_config(output: Path, settings: dict[str, Any]) -> None:
    """Check that an existing ``eval_config.json`` (a run to resume) has the same settings; writes nothing (the
    file is written once the model has loaded, so a model that fails to load leaves no trace)."""
    path = output / EVAL_CONFIG
    if path.is_file():
        previous = artifacts.read_json(path)
        if previous is None:
            raise UserError(f"{path} is not a valid JSON object; use a new --output or pass --overwrite true")
        changed = first_difference(previous, normalized(settings))
        if changed:
            raise UserError(
                f"{output} holds a run with other settings ({changed}); "
                "use a new --output or pass --overwrite true to start over"
            )
        return
    # Without eval_config.json, generations.jsonl and summary.json are not ours: _prepare_output has refused them.


def prepare_evaluation(args: EvalArguments, shard: Shard | None = None) -> EvalRun:
    """Check everything that can fail fast (settings, data, output folder) before any model is loaded; the main
    process also prepares the output folder (``--overwrite``, ``eval_config.json``, shares left by a stopped run)."""
    from datasets.utils.logging import disable_progress_bar

    from mathsft.environment import resolve_device
    from mathsft.generation import resolve_backend, resolve_dtype

    shard = shard or Shard()
    validate_eval_args(args)
    device = resolve_device(_process_device(args.device, shard))
    dtype = resolve_dtype(args.dtype, device)
    backend = resolve_backend(args.backend, device)
    disable_progress_bar()  # MATH-500 loads in a second; keep stderr for errors and the generation bar
    problems = load_problems(args.dataset, args.split, [args.problem_column, args.answer_column], [args.problem_column])
    for row, answer in enumerate(problems[args.answer_column], start=1):
        if answer is None or not str(answer).strip():
            raise UserError(f"{args.dataset} ({args.split}) row {row}: '{args.answer_column}' is empty or null")
    if args.limit is not None:
        problems = problems.select(range(min(args.limit, len(problems))))
    run = EvalRun(args, Path(args.output), device, dtype, backend, problems.to_list(), 0, [], shard)
    if shard.is_main:
        _prepare_output(run)
    return run


def _process_device(device: str, shard: Shard) -> str:
    """With several processes on GPUs, ``auto`` is this process's own GPU."""
    import torch

    if device == "auto" and shard.distributed and torch.cuda.is_available():
        return f"cuda:{shard.local_rank}"
    return device


def _prepare_output(run: EvalRun) -> None:
    """Refuse a folder that is not the evaluation's to use (see ``mathsft.ownership``); with --overwrite remove the
    previous evaluation's files, and only those."""
    output, args = run.output, run.args
    artifacts.check_writable_dir(output, "--output folder")
    reads = [("model folder", args.model), ("adapter folder", args.adapter), ("data", args.dataset)]
    ownership.check_output_location(output, reads, "--output")
    previous = ownership.refuse_foreign(output, ownership.EVALUATION_FOLDER, "--output")
    output.mkdir(parents=True, exist_ok=True)
    if args.overwrite:
        ownership.remove(previous.removable(keep=ownership.KEPT_ON_OVERWRITE))
    run.settings = eval_settings(args, run.dtype_name)
    check_config(output, run.settings)
    merged = merge_shards(output)  # rows a stopped multi-process run left in its shares
    if merged:
        print(f"merged {merged} rows left by a stopped multi-process run into {run.generations_path}", file=sys.stderr)
    read_jsonl_rows(run.generations_path, repair=True)  # cut a torn last line before anyone reads the file


def record_settings(run: EvalRun) -> None:
    """Write ``eval_config.json`` (main process, once)."""
    if not (run.output / EVAL_CONFIG).is_file():
        artifacts.write_json_atomic(run.output / EVAL_CONFIG, run.settings)


def plan_work(run: EvalRun) -> None:
    """The (problem, sample) pairs without a row yet, and this process's share of them."""
    existing = read_jsonl_rows(run.generations_path)
    for number, row in enumerate(existing, start=1):
        if not all(type(row.get(key)) is int for key in ("id", "sample")):  # bool is no id either
            raise UserError(f"{run.generations_path} row {number}: 'id' and 'sample' must be integers; "
                            "use a new --output or pass --overwrite true")  # fmt: skip
    done = {(row["id"], row["sample"]) for row in existing}
    todo = [(pid, s) for pid in range(len(run.examples)) for s in range(run.args.num_samples) if (pid, s) not in done]
    run.resumed_rows, run.total_todo, run.todo = len(existing), len(todo), run.shard.take(todo)
    if existing and run.shard.is_main:
        print(f"resuming: {len(existing)} rows already in {run.generations_path}, {len(todo)} to generate",
              file=sys.stderr)  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------
# Step 2: generate and grade
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class GenerationStats:
    tokens: int = 0
    seconds: float = 0.0


def _problem_meta(example: dict[str, Any]) -> dict[str, Any]:
    return {"unique_id": example.get("unique_id"), "subject": example.get("subject"), "level": example.get("level")}


def _grade_rows(rows: list[dict[str, Any]], timeout_s: float, num_workers: int | None) -> None:
    """Add ``pred``, ``correct`` and ``status`` to rows holding ``completion`` and ``gold`` (in place)."""
    from mathsft.grading import grade_many

    results = grade_many(
        [(row["completion"], str(row["gold"])) for row in rows], timeout_s=timeout_s, num_workers=num_workers
    )
    for row, result in zip(rows, results, strict=True):
        row.update(pred=result.pred, correct=result.correct, status=result.status, rule=result.rule)


def _requests(run: EvalRun, tokenizer: Any) -> tuple[dict[int, str], list[Any]]:
    """The rendered prompt of every problem left to do, and one generation request per (problem, sample)."""
    from mathsft import generation as gen
    from mathsft.template import render_generation_prompt

    args = run.args
    prompts = {
        pid: render_generation_prompt(tokenizer, run.examples[pid][args.problem_column], args.system_prompt)
        for pid in sorted({pid for pid, _ in run.todo})
    }
    prompt_ids = {pid: gen.encode_prompt(tokenizer, text) for pid, text in prompts.items()}
    return prompts, [gen.GenerationRequest(key=(pid, s), prompt_ids=prompt_ids[pid]) for pid, s in run.todo]


def _result_row(run: EvalRun, pid: int, sample: int, prompt: str, completion: Any) -> dict[str, Any]:
    example = run.examples[pid]
    return {
        "id": pid, **_problem_meta(example), "sample": sample, "prompt": prompt, "completion": completion.text,
        "gold": str(example[run.args.answer_column]), "finish_reason": completion.finish_reason,
        "num_tokens": completion.num_tokens,
    }  # fmt: skip


def _context_length(model: Any) -> int | None:
    """The positions the model was built for (``max_position_embeddings``), None when its config does not say."""
    context = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return context if isinstance(context, int) and not isinstance(context, bool) and context > 0 else None


def _longest_prompt(run: EvalRun, tokenizer: Any) -> int:
    """Tokens of the longest prompt of the whole evaluation (not only of the rows left), so that a resumed run caps
    its generations exactly as the first run did."""
    from mathsft import generation as gen
    from mathsft.template import render_generation_prompt

    texts = [render_generation_prompt(tokenizer, ex[run.args.problem_column], run.args.system_prompt)
             for ex in run.examples]  # fmt: skip
    return max((len(gen.encode_prompt(tokenizer, text)) for text in texts), default=0)


def capped_max_new_tokens(requested: int, context: int | None, longest_prompt: int, say: bool = True) -> int:
    """``--max_new_tokens``, capped at what the model's context leaves after the longest prompt: positions past the
    context are untrained (garbage, or an error in the paged cache). Said once on stderr, not per prompt."""
    if context is None:
        return requested
    room = context - longest_prompt
    if room < 1:
        raise UserError(f"the longest prompt ({longest_prompt} tokens) fills the model's context "
                        f"(max_position_embeddings {context}); nothing can be generated")  # fmt: skip
    if requested > room:
        if say:
            print(f"note: --max_new_tokens {requested} is capped at {room}: the model's context "
                  f"(max_position_embeddings {context}) minus the longest prompt ({longest_prompt} tokens)",
                  file=sys.stderr, flush=True)  # fmt: skip
        return room
    return requested


def cap_grader_workers(workers: int | None, say: bool = True) -> int | None:
    """``--grader_workers``, capped at the CPUs this process may use (more processes only compete); said once."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if workers is not None and workers > cpus:
        if say:
            print(f"note: --grader_workers {workers} is capped at {cpus}, the CPUs available", file=sys.stderr)
        return cpus
    return workers


def generate_and_grade(run: EvalRun) -> GenerationStats:
    """Generate every missing (problem, sample), grade each batch and append it to ``generations.jsonl``."""
    from mathsft import generation as gen

    stats = GenerationStats()
    if not run.todo:
        return stats
    args = run.args
    base = adapter_base(args.model) if args.adapter is None else None
    model_path, adapter = (base, args.model) if base is not None else (args.model, args.adapter)
    model, tokenizer = gen.load_model_and_tokenizer(
        model_path, adapter, str(run.device), args.dtype, args.attn_implementation
    )
    if run.shard.is_main:
        record_settings(run)  # the model loaded: from now on this folder holds this evaluation
    prompts, requests = _requests(run, tokenizer)
    max_new_tokens = capped_max_new_tokens(
        args.max_new_tokens, _context_length(model), _longest_prompt(run, tokenizer), say=run.shard.is_main
    )
    settings = gen.SamplingSettings(
        max_new_tokens=max_new_tokens, temperature=args.temperature, top_p=args.top_p, seed=args.seed
    )
    interrupt_after = int(os.environ.get(_INTERRUPT_ENV, "0"))
    started = time.perf_counter()
    batches = gen.generate(model, tokenizer, requests, settings, run.backend, args.batch_size, args.progress)
    try:
        with JsonlAppender(run.shard.rows_path(run.output)) as appender, contextlib.closing(batches):
            # closing() stops the paged backend's thread on Ctrl-C or an error
            for number, finished in enumerate(batches, start=1):
                keys = [cast(tuple[int, int], key) for key, _ in finished]
                rows = [
                    _result_row(run, pid, s, prompts[pid], completion)
                    for (pid, s), (_, completion) in zip(keys, finished, strict=True)
                ]
                stats.tokens += sum(row["num_tokens"] for row in rows)
                _grade_rows(rows, args.grader_timeout, args.grader_workers)
                appender.write(rows)
                if interrupt_after and number >= interrupt_after:
                    raise KeyboardInterrupt
    except KeyboardInterrupt:
        print(f"{run.generations_path} keeps every finished batch: rerun the same command to resume", file=sys.stderr)
        raise
    stats.seconds = time.perf_counter() - started
    return stats


# ----------------------------------------------------------------------------------------------------------------
# Step 3: summarize
# ----------------------------------------------------------------------------------------------------------------

TIMING_KEYS = ("wall_time_s", "generation_time_s", "generated_tokens", "generated_tokens_per_s")


def summarize_evaluation(run: EvalRun, stats: GenerationStats, wall_time_s: float) -> EvalSummary:
    """Score every row of this evaluation, write ``summary.json`` and print it as a table."""
    from mathsft.environment import device_name
    from mathsft.scoring import format_summary_table

    args = run.args
    rows = read_jsonl_rows(run.generations_path)
    selected = {(pid, s) for pid in range(len(run.examples)) for s in range(args.num_samples)}
    rows = _dedupe([row for row in rows if (row["id"], row["sample"]) in selected])
    summary: dict[str, Any] = dict(_summarize(rows))
    summary.update(
        {
            "model": args.model,
            "adapter": args.adapter,
            "dataset": args.dataset,
            "split": args.split,
            "generation": {
                "num_samples": args.num_samples, "temperature": args.temperature, "top_p": args.top_p,
                "max_new_tokens": args.max_new_tokens, "seed": args.seed, "system_prompt": args.system_prompt,
            },  # fmt: skip
            "backend": run.backend,
            "dtype": run.dtype_name,
            "device": device_name(run.device),
            "resumed_rows": run.resumed_rows,
            "generated_rows": run.total_todo,
            "num_processes": run.shard.world_size,
            "wall_time_s": round(wall_time_s, 3),
            "generation_time_s": round(stats.seconds, 3),
            "generated_tokens": stats.tokens,
            "generated_tokens_per_s": round(stats.tokens / stats.seconds, 1) if stats.seconds else None,
        }
    )
    if not run.total_todo:  # nothing generated now (a finished run, rerun): keep the timings of the run that generated
        previous = artifacts.read_json(run.output / EVAL_SUMMARY) or {}
        summary |= {key: previous[key] for key in TIMING_KEYS if key in previous}
    artifacts.write_json_atomic(run.output / EVAL_SUMMARY, summary)
    print(format_summary_table(summary))
    print(f"wrote {run.generations_path} and {run.output / EVAL_SUMMARY}")
    return summary  # type: ignore[return-value]


def run_evaluation(args: EvalArguments) -> EvalSummary | None:
    """Generate, grade and summarize; resumes from ``<output>/generations.jsonl``. Returns the summary (None in the
    processes other than the main one of a multi-process evaluation)."""
    started = time.perf_counter()
    validate_eval_args(args)
    shard = current_shard()
    args.grader_workers = cap_grader_workers(args.grader_workers, say=shard.is_main)
    group = ProcessGroup(shard)
    try:
        if shard.is_main:
            artifacts.check_writable_dir(args.output, "--output folder")
        with exclusive_output(Path(args.output), "evaluation") if shard.is_main else contextlib.nullcontext():
            run = prepare_evaluation(args, shard)
            group.barrier()  # the main process has prepared the output folder
            plan_work(run)
            finished = artifacts.read_eval_summary(run.output) if shard.is_main and not run.total_todo else None
            if finished is not None and not shard.distributed:  # this very evaluation, done: rewrite nothing
                return _reprint(run, finished)
            stats = generate_and_grade(run)
            stats = GenerationStats(int(group.reduce(stats.tokens, "sum")), group.reduce(stats.seconds, "max"))
            group.barrier()  # every share is written
            summary = None
            if shard.is_main:
                record_settings(run)  # also when this process had no share to generate
                merge_shards(run.output)
                summary = summarize_evaluation(run, stats, time.perf_counter() - started)
            group.barrier()  # leave together: a process gone early can abort the others' gloo connections
            return summary
    finally:
        group.close()


def _reprint(run: EvalRun, summary: EvalSummary) -> EvalSummary:
    from mathsft.scoring import format_summary_table

    print(format_summary_table(summary))
    print(f"{run.output} already holds this evaluation, finished; nothing to do")
    return summary


def _dedupe(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: set[tuple[Any, Any]] = set()
    unique = []
    for row in rows:
        key = (row.get("id"), row.get("sample", 0))
        if key not in seen:
            seen.add(key)
            unique.append(row)
    return unique


def _summarize(rows: list[dict[str, Any]]) -> artifacts.Scores:
    """Scores with 95% intervals over problems, and the grader that produced the grades."""
    from mathsft.grading import grader_identity
    from mathsft.scoring import summarize
    from mathsft.stats import with_intervals

    try:
        scores = with_intervals(summarize(rows), rows)
    except (ValueError, KeyError, TypeError) as err:
        raise UserError(f"cannot summarize: {err}") from err
    scores["grader"] = grader_identity()
    return cast(artifacts.Scores, scores)


# ----------------------------------------------------------------------------------------------------------------
# Re-grading
# ----------------------------------------------------------------------------------------------------------------


def _check_grade_row(row: dict[str, Any], number: int, source: str) -> None:
    """A row to grade has a text completion, a gold answer and (optionally) scalar ids; else one line."""
    for key in ("completion", "gold"):
        if key not in row:
            raise UserError(f"{source} line {number} has no '{key}' field")
    if not isinstance(row["completion"], str):
        raise UserError(f"{source} line {number}: 'completion' must be a string")
    if not isinstance(row["gold"], str):  # a number's text is not the number (0.50 vs 0.5): the reference as written
        raise UserError(f"{source} line {number}: 'gold' must be a string, got {_json_text(row['gold'])}")
    row.setdefault("id", number - 1)  # without ids every row is its own problem (one sample each)
    row.setdefault("sample", 0)
    for key in ("id", "sample"):
        if not isinstance(row[key], str | int | float) or isinstance(row[key], bool):
            raise UserError(f"{source} line {number}: '{key}' must be a string or a number")


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)[:40]


def _check_unique_pairs(rows: list[dict[str, Any]], source: str) -> None:
    """Ids and samples are compared as they are written (``1``, ``1.0`` and ``"1"`` are three problems, never
    merged); a repeated (id, sample) pair is refused, since which of the two rows counts would be a guess."""
    first_line: dict[tuple[str, str], int] = {}
    for number, row in enumerate(rows, start=1):
        key = (_json_text(row["id"]), _json_text(row["sample"]))
        if key in first_line:
            raise UserError(f"{source} line {number} repeats id {key[0]}, sample {key[1]} of line {first_line[key]}")
        first_line[key] = number


def _as_written(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows whose ids are their JSON text, for scoring: Python's 1 == 1.0 must not merge two problems."""
    return [row | {"id": _json_text(row["id"])} for row in rows]


def run_grading(args: GradeArguments) -> dict[str, Any]:
    """Grade an existing JSONL of completions; writes the scored rows and returns the summary.

    Every row is checked, graded and scored before the output is written: a refused input leaves no output file."""
    validate_grader_timeout(args.grader_timeout, key="--grader_timeout")
    if args.grader_workers is not None and args.grader_workers < 1:
        raise UserError(f"--grader_workers must be >= 1, got {args.grader_workers}")
    args.grader_workers = cap_grader_workers(args.grader_workers)
    source = Path(args.input)
    if not source.is_file():
        raise UserError(f"input file not found: {args.input}")
    destination = Path(args.output) if args.output else source.with_name(source.stem + ".scored.jsonl")
    artifacts.check_writable_dir(destination.parent, "output folder")
    rows = read_jsonl_rows(source)
    if not rows:
        raise UserError(f"{args.input} holds no rows")
    for number, row in enumerate(rows, start=1):
        _check_grade_row(row, number, args.input)
    _check_unique_pairs(rows, args.input)
    _grade_rows(rows, args.grader_timeout, args.grader_workers)
    summary: dict[str, Any] = dict(_summarize(_as_written(rows)))  # a refusal here too comes before any write
    destination.parent.mkdir(parents=True, exist_ok=True)
    # Atomic: the output may be the input itself, and a failed write must never lose a row.
    artifacts.write_text_atomic(destination, "".join(artifacts.jsonl_line(row) for row in rows))
    summary["input"] = str(source)
    summary["output"] = str(destination)
    return summary
