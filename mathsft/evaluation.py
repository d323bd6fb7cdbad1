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
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mathsft.data import DEFAULT_DATASET, load_problems
from mathsft.errors import UserError

GENERATIONS_FILE = "generations.jsonl"
CONFIG_FILE = "eval_config.json"
SUMMARY_FILE = "summary.json"

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
            "choices": ["auto", "hf", "static", "paged"],
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
    overwrite: bool = field(default=False, metadata={"help": "Delete previous outputs in --output and start over."})
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
    """Checks that argparse cannot express; each failure is one line."""
    if args.temperature < 0:
        raise UserError(f"--temperature must be >= 0, got {args.temperature}")
    if args.num_samples < 1:
        raise UserError(f"--num_samples must be >= 1, got {args.num_samples}")
    if args.num_samples > 1 and args.temperature == 0:
        raise UserError(
            f"--num_samples {args.num_samples} with greedy decoding (--temperature 0) gives identical samples; "
            "set --temperature (e.g. 0.7) or use --num_samples 1"
        )
    if not 0 < args.top_p <= 1:
        raise UserError(f"--top_p must be in (0, 1], got {args.top_p}")
    if args.max_new_tokens < 1:
        raise UserError(f"--max_new_tokens must be >= 1, got {args.max_new_tokens}")
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be >= 1, got {args.limit}")
    if args.batch_size is not None and args.batch_size < 1:
        raise UserError(f"--batch_size must be >= 1, got {args.batch_size}")


# ----------------------------------------------------------------------------------------------------------------
# Output files
# ----------------------------------------------------------------------------------------------------------------


def eval_settings(args: EvalArguments, dtype: str) -> dict[str, Any]:
    """The contents of ``eval_config.json``: the guarded settings plus the resolved dtype (fp32 vs bf16 differ)."""
    settings = {name: getattr(args, name) for name in GUARDED_SETTINGS}
    settings["dtype"] = dtype
    return settings


def check_or_write_config(output: Path, settings: dict[str, Any]) -> None:
    """Write ``eval_config.json``, or check that an existing one (a run to resume) has the same settings."""
    path = output / CONFIG_FILE
    if path.is_file():
        try:
            previous = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise UserError(f"{path} is not valid JSON ({err}); use a new --output or pass --overwrite") from err
        changed = [
            f"{key}: {previous.get(key)!r} -> {settings.get(key)!r}"
            for key in sorted(set(previous) | set(settings))
            if previous.get(key) != settings.get(key)
        ]
        if changed:
            raise UserError(
                f"{output} holds a run with other settings ({'; '.join(changed)}); "
                "use a new --output or pass --overwrite to start over"
            )
        return
    if (output / GENERATIONS_FILE).exists():
        raise UserError(
            f"{output / GENERATIONS_FILE} exists but {CONFIG_FILE} does not, so its settings are unknown; "
            "use a new --output or pass --overwrite"
        )
    _write_json(path, settings)


def _write_json(path: Path, data: Any) -> None:
    """Write via a temporary file and rename, so the file is never half-written."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def read_jsonl_rows(path: Path, repair: bool = False) -> list[dict[str, Any]]:
    """Rows of a JSONL file. With ``repair``, a half-written last line (a crash mid-write) is cut off the file."""
    if not path.exists():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1  # everything after the last newline is an incomplete line
    if end < len(data):
        if not repair:
            raise UserError(f"{path} ends with an incomplete line")
        with open(path, "r+b") as f:
            f.truncate(end)
            f.flush()
            os.fsync(f.fileno())
        data = data[:end]
    rows = []
    for number, line in enumerate(data.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise UserError(
                f"{path} line {number} is not valid JSON ({err.msg}); use --overwrite to start over"
            ) from err
    return rows


class JsonlAppender:
    """Append rows to a JSONL file; each ``write`` is flushed and fsync'd before it returns."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, rows: Iterable[dict[str, Any]]) -> None:
        # One write call per batch: a crash leaves at most one partial line, which resume cuts off.
        self._file.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


# ----------------------------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------------------------


def _problem_meta(example: dict[str, Any]) -> dict[str, Any]:
    return {"unique_id": example.get("unique_id"), "subject": example.get("subject"), "level": example.get("level")}


def _grade_rows(rows: list[dict[str, Any]], timeout_s: float, num_workers: int | None) -> None:
    """Add ``pred``, ``correct`` and ``status`` to rows holding ``completion`` and ``gold`` (in place)."""
    from mathsft.grading import grade_many

    results = grade_many(
        [(row["completion"], str(row["gold"])) for row in rows], timeout_s=timeout_s, num_workers=num_workers
    )
    for row, result in zip(rows, results, strict=True):
        row["pred"], row["correct"], row["status"] = result.pred, result.correct, result.status


def run_evaluation(args: EvalArguments) -> dict[str, Any]:
    """Generate, grade and summarize; resumes from ``<output>/generations.jsonl``. Returns the summary."""
    validate_eval_args(args)
    from mathsft import generation as gen

    # Everything that can fail fast (data, settings, output folder) is checked before the model is loaded.
    device = gen.resolve_device(args.device)
    dtype = gen.resolve_dtype(args.dtype, device)
    backend = gen.resolve_backend(args.backend, device)
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()  # MATH-500 loads in a second; keep stderr for errors and the generation bar
    problems = load_problems(args.dataset, args.split, [args.problem_column, args.answer_column])
    if args.limit is not None:
        problems = problems.select(range(min(args.limit, len(problems))))
    examples = problems.to_list()

    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    generations_path = output / GENERATIONS_FILE
    if args.overwrite:
        for name in (GENERATIONS_FILE, CONFIG_FILE, SUMMARY_FILE):
            (output / name).unlink(missing_ok=True)
    check_or_write_config(output, eval_settings(args, str(dtype).removeprefix("torch.")))

    existing = read_jsonl_rows(generations_path, repair=True)
    done = {(row["id"], row["sample"]) for row in existing}
    todo = [(pid, s) for pid in range(len(examples)) for s in range(args.num_samples) if (pid, s) not in done]
    if existing:
        print(f"resuming: {len(existing)} rows already in {generations_path}, {len(todo)} to generate", file=sys.stderr)

    started = time.perf_counter()
    generated_tokens = 0
    generation_seconds = 0.0
    if todo:
        model, tokenizer = gen.load_model_and_tokenizer(
            args.model, args.adapter, args.device, args.dtype, args.attn_implementation
        )
        from mathsft.template import render_generation_prompt

        prompts = {
            pid: render_generation_prompt(tokenizer, examples[pid][args.problem_column], args.system_prompt)
            for pid in sorted({pid for pid, _ in todo})
        }
        prompt_ids = {pid: gen.encode_prompt(tokenizer, text) for pid, text in prompts.items()}
        requests = [gen.GenerationRequest(key=(pid, s), prompt_ids=prompt_ids[pid]) for pid, s in todo]
        settings = gen.SamplingSettings(
            max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p, seed=args.seed
        )
        interrupt_after = int(os.environ.get(_INTERRUPT_ENV, "0"))
        appender = JsonlAppender(generations_path)
        generation_started = time.perf_counter()
        batches = gen.generate(model, tokenizer, requests, settings, backend, args.batch_size, args.progress)
        try:
            with contextlib.closing(batches):  # stops the paged backend's thread on Ctrl-C or an error
                for number, finished in enumerate(batches, start=1):
                    rows = []
                    for (pid, sample), completion in finished:
                        example = examples[pid]
                        rows.append(
                            {
                                "id": pid,
                                **_problem_meta(example),
                                "sample": sample,
                                "prompt": prompts[pid],
                                "completion": completion.text,
                                "gold": str(example[args.answer_column]),
                                "finish_reason": completion.finish_reason,
                                "num_tokens": completion.num_tokens,
                            }
                        )
                        generated_tokens += completion.num_tokens
                    _grade_rows(rows, args.grader_timeout, args.grader_workers)
                    appender.write(rows)
                    if interrupt_after and number >= interrupt_after:
                        raise KeyboardInterrupt
        except KeyboardInterrupt:
            print(f"{generations_path} keeps every finished batch: rerun the same command to resume", file=sys.stderr)
            raise
        finally:
            appender.close()
        generation_seconds = time.perf_counter() - generation_started

    rows = read_jsonl_rows(generations_path)
    selected = {(pid, s) for pid in range(len(examples)) for s in range(args.num_samples)}
    rows = _dedupe([row for row in rows if (row["id"], row["sample"]) in selected])
    summary = _summarize(rows)
    summary.update(
        {
            "model": args.model,
            "adapter": args.adapter,
            "dataset": args.dataset,
            "split": args.split,
            "generation": {
                "num_samples": args.num_samples,
                "temperature": args.temperature,
                "top_p": args.top_p,
                "max_new_tokens": args.max_new_tokens,
                "seed": args.seed,
                "system_prompt": args.system_prompt,
            },
            "backend": backend,
            "dtype": str(dtype).removeprefix("torch."),
            "device": gen.device_name(device),
            "resumed_rows": len(existing),
            "generated_rows": len(todo),
            "wall_time_s": round(time.perf_counter() - started, 3),
            "generation_time_s": round(generation_seconds, 3),
            "generated_tokens": generated_tokens,
            "generated_tokens_per_s": round(generated_tokens / generation_seconds, 1) if generation_seconds else None,
        }
    )
    if not todo:
        # Nothing generated now (a finished run, rerun): keep the timings of the run that generated the rows.
        with contextlib.suppress(OSError, json.JSONDecodeError, TypeError):
            previous = json.loads((output / SUMMARY_FILE).read_text())
            for key in ("wall_time_s", "generation_time_s", "generated_tokens", "generated_tokens_per_s"):
                summary[key] = previous.get(key, summary[key])
    _write_json(output / SUMMARY_FILE, summary)
    from mathsft.scoring import format_summary_table

    print(format_summary_table(summary))
    print(f"wrote {generations_path} and {output / SUMMARY_FILE}")
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


def _summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    from mathsft.scoring import summarize

    try:
        return summarize(rows)
    except (ValueError, KeyError) as err:
        raise UserError(f"cannot summarize: {err}") from err


# ----------------------------------------------------------------------------------------------------------------
# Re-grading
# ----------------------------------------------------------------------------------------------------------------


def run_grading(args: GradeArguments) -> dict[str, Any]:
    """Grade an existing JSONL of completions; writes the scored rows and returns the summary."""
    source = Path(args.input)
    if not source.is_file():
        raise UserError(f"input file not found: {args.input}")
    rows = read_jsonl_rows(source)
    if not rows:
        raise UserError(f"{args.input} holds no rows")
    for number, row in enumerate(rows, start=1):
        for key in ("completion", "gold"):
            if key not in row:
                raise UserError(f"{args.input} line {number} has no '{key}' field")
        # Without ids every row is its own problem (one sample each).
        row.setdefault("id", number - 1)
        row.setdefault("sample", 0)
        if not isinstance(row["completion"], str):
            raise UserError(f"{args.input} line {number}: 'completion' must be a string")
    _grade_rows(rows, args.grader_timeout, args.grader_workers)
    destination = Path(args.output) if args.output else source.with_name(source.stem + ".scored.jsonl")
    destination.parent.mkdir(parents=True, exist_ok=True)
    with open(destination, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    summary = _summarize(rows)
    summary["input"] = str(source)
    summary["output"] = str(destination)
    return summary
