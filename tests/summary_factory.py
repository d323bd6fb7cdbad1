"""Run and evaluation summaries for tests, built from the schemas in ``mathsft.artifacts``, not from hand-made dicts.

Each factory fills every key of its schema, refuses an override key the schema does not declare, and validates the
result with ``artifacts.schema_problems``. Renaming or adding a key in ``RunSummary`` / ``EvalSummary`` therefore
breaks these tests at once instead of letting the report silently print "—". Keys a summary may carry beyond its
schema (``mathsft.results.RunSummaryExtras`` / ``EvalSummaryExtras``) are accepted by name and type-checked too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_type_hints

from mathsft import artifacts
from mathsft.artifacts import EpochRecord, EvalSummary, RunSummary, schema_problems
from mathsft.methods import METHODS
from mathsft.stats import wilson_interval

# A value for every hyperparameter a registered method may own; a new method's new key fails here until added.
METHOD_HYPERPARAMETERS: dict[str, Any] = {
    "adam_beta1": 0.9, "adam_beta2": 0.95, "adam_epsilon": 1e-8,
    "sgd_momentum": 0.9, "sgd_nesterov": False, "sgd_dampening": 0.0,
    "use_peft": True, "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "lora_target_modules": "all-linear",
    "lora_trainable_tokens": ["<|im_end|>"],
}  # fmt: skip

GPU_EPOCHS: list[EpochRecord] = [
    {"epoch": 1.0, "complete": True, "resumed_mid_epoch": False, "global_step": 10, "wall_time_s": 600.0,
     "tokens": 1_200_000, "tokens_per_s": 2000.0, "peak_memory_allocated_gib": 10.5, "peak_memory_reserved_gib": 12.25},
    {"epoch": 2.0, "complete": True, "resumed_mid_epoch": False, "global_step": 20, "wall_time_s": 3700.0,
     "tokens": 1_200_000, "tokens_per_s": 324.3, "peak_memory_allocated_gib": 11.0, "peak_memory_reserved_gib": 12.0},
]  # fmt: skip
CPU_EPOCHS: list[EpochRecord] = [
    {"epoch": 1.0, "complete": True, "resumed_mid_epoch": False, "global_step": 10, "wall_time_s": 20.0,
     "tokens": 30_000, "tokens_per_s": 1500.0, "peak_memory_allocated_gib": None, "peak_memory_reserved_gib": None,
     "peak_rss_gib": 0.6018},
    {"epoch": 2.0, "complete": True, "resumed_mid_epoch": False, "global_step": 20, "wall_time_s": 10.0,
     "tokens": 30_000, "tokens_per_s": 3000.0, "peak_memory_allocated_gib": None, "peak_memory_reserved_gib": None,
     "peak_rss_gib": 0.5},
]  # fmt: skip


def _build(schema: type, defaults: dict[str, Any], overrides: dict[str, Any], extra_keys: set[str]) -> dict[str, Any]:
    keys = set(get_type_hints(schema))
    if set(defaults) != keys:
        raise AssertionError(f"the factory of {schema.__name__} is out of date: schema keys it lacks "
                             f"{sorted(keys - set(defaults))}, keys the schema lacks {sorted(set(defaults) - keys)}")
    unknown = set(overrides) - keys - extra_keys
    if unknown:
        raise KeyError(f"{schema.__name__} has no key {sorted(unknown)}")
    data = defaults | overrides
    problems = schema_problems(data, schema)
    if problems:
        raise AssertionError(f"{schema.__name__}: {problems}")
    return data


def hyperparameters(method: str, **overrides: Any) -> dict[str, Any]:
    """What ``training.run_hyperparameters`` records: shared settings plus the keys the method owns."""
    owned = {key: METHOD_HYPERPARAMETERS[key] for key in METHODS[method].hyperparameters}
    if "use_peft" in owned:
        owned["use_peft"] = METHODS[method].peft
    shared = {
        "model_name_or_path": "Qwen/Qwen3-0.6B-Base", "dtype": "float32", "method": method,
        "optimizer": METHODS[method].optimizer, "learning_rate": 1e-5, "weight_decay": 0.0,
        "lr_scheduler_type": "cosine", "warmup_steps": 0.03, "max_grad_norm": 1.0, "num_train_epochs": 2,
        "max_steps": -1, "per_device_train_batch_size": 8, "gradient_accumulation_steps": 2, "max_length": 1024,
        "bf16": True, "fp16": False, "activation_checkpointing": False, "packing": False, "padding_free": False,
        "seed": 42, "world_size": 1, "effective_batch_size": 16, "use_peft": METHODS[method].peft,
    }  # fmt: skip
    return shared | owned | overrides


# Keys issue 17 adds to run_summary.json (the training side's contract) that the schema may not declare yet.
RUN_SUMMARY_EXTRAS = {"eval_precision", "lora_trainable_tokens", "lora_trainable_token_ids"}


def run_summary(method: str = "adamw", *, lr: float = 1e-5, val: tuple[float, ...] = (1.0, 0.8), cuda: bool = True,
                seed: int = 42, **overrides: Any) -> RunSummary:
    """A complete ``run_summary.json`` of a 2-epoch, 20-step run; ``val`` is the validation loss at steps 10, 20."""
    lora = METHODS[method].peft
    hyper = hyperparameters(method, learning_rate=lr, bf16=cuda, seed=seed)
    defaults = {
        "method": method,
        "hyperparameters": hyper,
        "data": {"dataset_name": "ricdomolm/MATH-500", "dataset_train_split": "train", "validation_fraction": 0.1,
                 "split_seed": 42, "overlong": "drop", "system_prompt": None, "num_train": 10_800,
                 "num_validation": 1200},
        "trainable_params": 10_092_544 if lora else 596_049_920,
        "total_params": 606_142_464 if lora else 596_049_920,
        "train_loss": [[5, 1.2], [10, 0.9], [15, 0.8], [20, 0.7]],
        "eval_loss": [[10 * (i + 1), v] for i, v in enumerate(val)],
        "epochs": GPU_EPOCHS if cuda else CPU_EPOCHS,
        "memory_kind": "cuda" if cuda else "cpu_peak_rss",
        "total_time_s": 4500.0 if cuda else 35.0,
        "global_step": 20,
        "device_name": "NVIDIA H100 80GB HBM3" if cuda else "cpu (x86_64, 2 cores)",
        "num_processes": 1,
        "versions": {"python": "3.11.7", "torch": "2.13.0"},
        "dropped_examples": 12,
        "dropped_train_examples": 10,
        "dropped_validation_examples": 2,
        "interrupted": False,
        "diverged": False,
        "diverged_step": None,
        "finished_at": "2026-01-01T00:00:00+0000",
        "lora_trainable_tokens": ["<|im_end|>"] if lora else [],
        "lora_trainable_token_ids": [151645] if lora else [],
        "eval_precision": None,  # not measured; tests of the precision table pass their own
    }  # fmt: skip
    return _build(RunSummary, defaults, overrides, RUN_SUMMARY_EXTRAS)  # type: ignore[return-value]


def eval_summary(accuracy: float = 0.5, problems: int = 4, samples: int = 1, **overrides: Any) -> EvalSummary:
    """A complete evaluation ``summary.json`` (MATH-500 by name, on an H100)."""
    defaults = {
        "num_problems": problems, "num_samples": samples, "accuracy": accuracy,
        "by_subject": {"Algebra": {"accuracy": 0.5, "count": 2}, "Geometry": {"accuracy": accuracy, "count": 2}},
        "by_level": {"1": {"accuracy": 1.0, "count": 1}, "5": {"accuracy": 0.0, "count": 3}},
        "no_box": 1, "truncated": 0, "grader_timeout": 0, "grader_error": 0,
        "accuracy_ci95": list(wilson_interval(round(accuracy * problems * samples), problems * samples)),
        "ci_method": "wilson",
        "grader": {"rules_version": "2", "equivalence": "mathsft.equivalence", "math-verify": "0.9.0"},
        "model": "Qwen/Qwen3-0.6B-Base", "adapter": None, "dataset": "ricdomolm/MATH-500", "split": "test",
        "generation": {"num_samples": samples, "temperature": 0.0, "top_p": 1.0, "max_new_tokens": 1024, "seed": 42,
                       "system_prompt": None},
        "backend": "paged", "dtype": "bfloat16", "device": "NVIDIA H100 80GB HBM3",
        "resumed_rows": 0, "generated_rows": problems * samples,
        "wall_time_s": 95.0, "generation_time_s": 90.0, "generated_tokens": 461_106, "generated_tokens_per_s": 5123.4,
    }  # fmt: skip
    # Sampled evaluations also carry pass@k and maj@n, named by k and n.
    sampled = {key for key in overrides if key.startswith(("pass@", "maj@"))}
    return _build(EvalSummary, defaults, overrides, sampled)  # type: ignore[return-value]


def graded_rows(correct: list[bool] | list[list[bool]], subjects: tuple[str, ...] = ("Algebra", "Geometry"),
                unique: bool = True) -> list[dict[str, Any]]:
    """``generations.jsonl`` rows: one per (problem, sample); ``correct[i]`` is problem i's answer or samples."""
    rows = []
    for pid, answers in enumerate(correct):
        for sample, ok in enumerate(answers if isinstance(answers, list) else [answers]):
            rows.append({"id": pid, "sample": sample, "correct": ok, "subject": subjects[pid % len(subjects)],
                         "level": 1 + pid % 5, "unique_id": f"test/p{pid}.json" if unique else None,
                         "completion": "\\boxed{1}", "pred": "1", "status": "correct" if ok else "wrong"})
    return rows


def write_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload))


def write_eval(folder: Path, summary: EvalSummary, rows: list[dict[str, Any]] | None = None,
               run: str | None = None, **record: Any) -> None:
    """An evaluation folder: summary.json, and generations.jsonl / the study's stage_config.json when given
    (``record``: more keys of the stage record, e.g. ``method``, ``seed``, ``step`` of a seeded study)."""
    write_json(folder / artifacts.EVAL_SUMMARY, summary)
    if rows is not None:
        (folder / artifacts.GENERATIONS).write_text("".join(json.dumps(r) + "\n" for r in rows))
    if run is not None or record:
        write_json(folder / artifacts.STAGE_CONFIG, {"stage": "eval", "run": run, **record})


def write_seeded_run(study: Path, method: str, lr: float, seed: int, val: tuple[float, ...] = (1.0, 0.8),
                     lora_r: int | None = None, **overrides: Any) -> str:
    """A training run of a seeded study (issue 17's layout): ``train/<run name>-seed<s>`` with its run_summary.json
    and stage record; returns the run's folder name."""
    name = f"{artifacts.run_name(method, lr, lora_r)}-seed{seed}"
    summary = run_summary(method, lr=lr, val=val, seed=seed, **overrides)
    if lora_r is not None:
        summary["hyperparameters"]["lora_r"] = lora_r
    write_json(study / artifacts.STUDY_TRAIN_DIR / name / artifacts.RUN_SUMMARY, summary)
    write_json(study / artifacts.STUDY_TRAIN_DIR / name / artifacts.STAGE_CONFIG,
               {"stage": "train", "name": name, "method": method, "learning_rate": lr, "lora_r": lora_r,
                "seed": seed})  # fmt: skip
    return name
