"""Training throughput: the project's SFTTrainer recipes against the course's plain PyTorch loop.

    python bench/train_throughput.py                                       # 3 methods x (course, fast, lean), one GPU
    python bench/train_throughput.py --setups course,lean --methods lora   # a subset
    python bench/train_throughput.py --device cpu --tiny --steps 2 --warmup_steps 1   # smoke test on CPU

Setups, each timed for ``--warmup_steps`` + ``--steps`` optimizer steps on the same MATH train examples:

* ``course``: the course notebook's loop, re-implemented here: bf16 weights (``model.to(bfloat16)``), batches of 2
  padded to the longest, gradient accumulation 4, max_length 512 (longer examples dropped), completion-only labels,
  ``model(input_ids, attention_mask, labels).loss`` (full logits), ``torch.optim.AdamW`` / ``SGD(momentum=0.9)`` /
  a PEFT LoRA model (r=16, alpha=32, all linear projections) with AdamW.
* ``fast`` / ``lean``: the real training path: the recipe (``recipes/qwen3-0.6b-base[-16gb]/<method>.yaml``) parsed by
  the same ``TrlParser`` as train_sft.py and built by ``mathsft.training.build_trainer``, then ``trainer.train()``.

The model is Qwen3-0.6B's architecture with random weights (``--config_dir``), saved with the real tokenizer into a
temporary folder so the project path loads it by path like a checkpoint; ``--model`` uses real weights instead.
Throughput counts non-padding tokens (prompt and completion) between the end of the last warm-up step and the end of
the last timed step (data loading, logging and optimizer included). MFU = tokens/s x 6N (4N for LoRA: no weight
gradients for the frozen base) / the bf16 matmul peak measured in the same run; N counts every parameter once (the
tied embedding once, as the LM-head matmul); attention-score FLOPs and checkpoint recomputation are not counted.

Writes ``<output_dir>/train_throughput.json`` and ``train_throughput.md`` after every configuration, so a crash or
timeout keeps what was measured; a failing configuration (e.g. out of memory) is recorded and the bench goes on.
"""

from __future__ import annotations

import datetime
import gc
import json
import logging
import platform
import random
import shlex
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere: import the project's own package

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, HfArgumentParser, TrainerCallback  # noqa: E402
from transformers.trainer_callback import PrinterCallback  # noqa: E402

from mathsft import training  # noqa: E402
from mathsft.callbacks import library_versions, peak_rss_gib  # noqa: E402
from mathsft.configs import ALL_LINEAR_PROJECTIONS, DataArguments, MathSFTConfig, validate_args  # noqa: E402
from mathsft.data import load_problems, split_train_validation  # noqa: E402
from mathsft.errors import UserError, exit_on_user_error  # noqa: E402
from mathsft.template import CHAT_TEMPLATE_KWARGS, build_example  # noqa: E402

SMOKE = REPO / "assets" / "smoke"
# Real data lives beside the checkout (../shared/data); on the GPU machine it is copied into .gpu_data/.
DATA_ROOTS = (REPO.parent / "shared" / "data", REPO / ".gpu_data")
SETUPS = ("course", "fast", "lean")
METHODS = ("adamw", "sgd", "lora")
# The lean profile's promise: full fine-tuning within a 16 GiB card, LoRA within 8 GiB.
MEMORY_TARGET_GIB = {"adamw": 16.0, "sgd": 16.0, "lora": 8.0}
# The course's learning rates; they do not change the timing.
COURSE_LR = {"adamw": 1e-5, "sgd": 2e-2, "lora": 2e-4}
GIB = 1024**3


@dataclass
class BenchArguments:
    device: str = field(default="auto", metadata={"help": "cuda, cpu or auto."})
    tiny: bool = field(
        default=False, metadata={"help": "Tiny smoke model (assets/smoke/model, with its tokenizer), for CPU tests."}
    )
    methods: str = field(default="adamw,sgd,lora", metadata={"help": "Comma-separated subset of adamw,sgd,lora."})
    setups: str = field(default="course,fast,lean", metadata={"help": "Comma-separated subset of course,fast,lean."})
    steps: int = field(default=10, metadata={"help": "Optimizer steps timed per configuration."})
    warmup_steps: int = field(default=3, metadata={"help": "Optimizer steps run before timing (at least 1)."})
    config_dir: str | None = field(
        default=None,
        metadata={"help": "Folder with Qwen3-0.6B-Base's config.json (default: ../shared/data or .gpu_data)."},
    )
    tokenizer_dir: str | None = field(default=None, metadata={"help": "Tokenizer folder (default: --config_dir)."})
    data_dir: str | None = field(
        default=None,
        metadata={"help": "MATH train data: a folder with train.jsonl (default: ../shared/data/math500 or .gpu_data)."},
    )
    model: str | None = field(default=None, metadata={"help": "Real checkpoint (with tokenizer) instead of random."})
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
    output_dir: str = field(default="bench/results", metadata={"help": "Where the JSON and Markdown go."})


# ---------------------------------------------------------------------------------------------------------------------
# Devices, memory and the matmul peak


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda but no CUDA device is visible")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise UserError(f"unknown --device {name}; use cuda, cpu or auto")
    return torch.device(name)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free_memory(device: torch.device) -> None:
    """Drop everything the previous configuration left (reference cycles included) and reset the peaks."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _memory(device: torch.device) -> dict[str, float | None]:
    if device.type == "cuda":
        _sync(device)
        return {
            "peak_allocated_gib": round(torch.cuda.max_memory_allocated(device) / GIB, 3),
            "peak_reserved_gib": round(torch.cuda.max_memory_reserved(device) / GIB, 3),
            "peak_rss_gib": None,
        }
    # ru_maxrss cannot be reset: on CPU this is the process's peak so far, not the configuration's.
    return {"peak_allocated_gib": None, "peak_reserved_gib": None, "peak_rss_gib": round(peak_rss_gib(), 3)}


def _matmul_peak_tflops(size: int, device: torch.device) -> float:
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


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import os

    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


# ---------------------------------------------------------------------------------------------------------------------
# Model, tokenizer and data


def _find_shared(name: str) -> Path | None:
    return next((root / name for root in DATA_ROOTS if (root / name).exists()), None)


@dataclass
class Sources:
    model_path: str  # what both setups load: a real checkpoint, the smoke model, or the random model saved to tmp
    model_description: str
    config_path: str
    tokenizer_path: str
    data_path: str


def _resolve_sources(args: BenchArguments) -> Sources:
    real_data = _find_shared("math500")
    data = args.data_dir or (str(real_data) if real_data else None)
    if args.tiny:
        model = args.model or str(SMOKE / "model")
        data = data or str(SMOKE / "data")  # the committed sample problems when the real data is absent
        return Sources(model, f"tiny smoke model {model}", model, args.tokenizer_dir or model, data)
    if data is None:
        raise UserError("no MATH train data: pass --data_dir (a folder with train.jsonl), e.g. .gpu_data/math500")
    if args.model:
        return Sources(args.model, f"real weights, {args.model}", args.model, args.tokenizer_dir or args.model, data)
    found = _find_shared("qwen3-0.6b-base")
    config_dir = args.config_dir or (str(found) if found else None)
    if config_dir is None or not (Path(config_dir) / "config.json").is_file():
        raise UserError("no model config: pass --config_dir (a folder with config.json) or --model")
    tokenizer_dir = args.tokenizer_dir or config_dir
    return Sources("", f"random weights, architecture of {config_dir}", config_dir, tokenizer_dir, data)


def _save_random_model(sources: Sources, out_dir: Path, seed: int, device: torch.device) -> None:
    """Random weights in bf16 (the dtype of the released checkpoint), saved with the tokenizer like a checkpoint."""
    tokenizer = AutoTokenizer.from_pretrained(sources.tokenizer_path)
    if tokenizer.chat_template is None:
        raise UserError(f"the tokenizer in {sources.tokenizer_path} has no chat template")
    config = AutoConfig.from_pretrained(sources.config_path)
    torch.manual_seed(seed)
    with torch.device(device):  # initialise on the GPU: seconds instead of a minute on the CPU
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    del model
    _free_memory(device)


def _count_parameters(config_path: str) -> dict[str, int]:
    """N for MFU, counted on the meta device: every parameter once (a tied LM head shares the embedding)."""
    config = AutoConfig.from_pretrained(config_path)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    total = sum(p.numel() for p in model.parameters())  # parameters() yields tied weights once
    embedding = model.get_input_embeddings().weight.numel()
    return {
        "N": total,
        "embedding": embedding,
        "non_embedding": total - embedding,
        "tied_embeddings": bool(getattr(config, "tie_word_embeddings", False)),
    }


def _train_examples(data_path: str, max_samples: int) -> Any:
    """The project's training examples: the same seeded 90/10 split and first-N selection as prepare_datasets."""
    defaults = DataArguments()
    raw = load_problems(data_path, defaults.dataset_train_split, [defaults.problem_column, defaults.solution_column])
    train, _ = split_train_validation(raw, defaults.validation_fraction, defaults.split_seed)
    return train.select(range(min(max_samples, len(train))))


@dataclass
class CourseExample:
    input_ids: list[int]
    labels: list[int]


def _course_examples(tokenizer: Any, train: Any, max_length: int) -> tuple[list[CourseExample], int]:
    """Chat-formatted, completion-only labels; examples longer than max_length are dropped (the course kept ~85%)."""
    defaults = DataArguments()
    examples, dropped = [], 0
    for problem, solution in zip(train[defaults.problem_column], train[defaults.solution_column], strict=True):
        example = build_example(problem, solution)
        prompt = tokenizer.apply_chat_template(
            example["prompt"], tokenize=False, add_generation_prompt=True, **CHAT_TEMPLATE_KWARGS
        )
        full = tokenizer.apply_chat_template(
            example["prompt"] + example["completion"], tokenize=False, **CHAT_TEMPLATE_KWARGS
        )
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        ids = tokenizer(full, add_special_tokens=False)["input_ids"]
        if len(ids) > max_length:
            dropped += 1
            continue
        # The completion starts where prompt and prompt+completion tokenizations diverge (as TRL does).
        n_prompt = next((i for i, (a, b) in enumerate(zip(prompt_ids, ids, strict=False)) if a != b), len(prompt_ids))
        examples.append(CourseExample(ids, [-100] * n_prompt + ids[n_prompt:]))
    if not examples:
        raise UserError(f"no training example fits the course's max_length={max_length}")
    return examples, dropped


def _course_batches(examples: list[CourseExample], batch_size: int, pad_id: int, seed: int) -> Iterator[dict]:
    """A shuffled DataLoader with a pad-to-longest collator, reshuffled at every epoch."""
    rng = random.Random(seed)
    while True:
        order = list(range(len(examples)))
        rng.shuffle(order)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            batch = [examples[i] for i in order[start : start + batch_size]]
            width = max(len(e.input_ids) for e in batch)
            yield {
                "input_ids": torch.tensor([e.input_ids + [pad_id] * (width - len(e.input_ids)) for e in batch]),
                "attention_mask": torch.tensor(
                    [[1] * len(e.input_ids) + [0] * (width - len(e.input_ids)) for e in batch]
                ),
                "labels": torch.tensor([e.labels + [-100] * (width - len(e.labels)) for e in batch]),
            }


# ---------------------------------------------------------------------------------------------------------------------
# The course loop


def _run_course(
    method: str, model_path: str, examples: list[CourseExample], pad_id: int, args: BenchArguments, device: torch.device
) -> dict[str, Any]:
    build_start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.bfloat16).to(device)  # course: bf16 weights
    model.train()
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=16, lora_alpha=32, lora_dropout=0.05, target_modules=list(ALL_LINEAR_PROJECTIONS), task_type="CAUSAL_LM"
        )
        model = get_peft_model(model, lora)
    params = [p for p in model.parameters() if p.requires_grad]
    if method == "sgd":
        optimizer = torch.optim.SGD(params, lr=COURSE_LR[method], momentum=0.9)
    else:
        optimizer = torch.optim.AdamW(params, lr=COURSE_LR[method])
    batches = _course_batches(examples, args.course_batch_size, pad_id, args.seed)
    build_s = time.perf_counter() - build_start

    total_steps = args.warmup_steps + args.steps
    ends: list[float] = []
    tokens_per_step: list[int] = []
    losses: list[float] = []
    _sync(device)
    start = time.perf_counter()
    for _ in range(total_steps):
        step_tokens = 0
        for _ in range(args.course_grad_accum):
            batch = next(batches)
            step_tokens += int(batch["attention_mask"].sum())  # non-padding tokens, counted on the CPU: no sync
            batch = {k: v.to(device) for k, v in batch.items()}
            loss = model(**batch).loss / args.course_grad_accum
            loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item() * args.course_grad_accum)  # the notebook prints the loss: one sync per step
        _sync(device)
        ends.append(time.perf_counter())
        tokens_per_step.append(step_tokens)
    result = _timing(ends, [start] + ends[:-1], tokens_per_step, args.warmup_steps)
    result |= {
        "build_s": round(build_s, 2),
        "micro_batch": args.course_batch_size,
        "grad_accum": args.course_grad_accum,
        "max_length": args.course_max_length,
        "weights": "bf16",
        "autocast": None,
        "activation_checkpointing": False,
        "attn_implementation": model.config._attn_implementation,
        "last_loss": round(losses[-1], 4),
        "train_examples": len(examples),
    }
    del model, optimizer, params, batches, loss, batch
    return result


def _timing(ends: list[float], begins: list[float], tokens_per_step: list[int], warmup: int) -> dict[str, Any]:
    """Tokens/s over the timed steps: from the end of the last warm-up step to the end of the last step."""
    wall = ends[-1] - ends[warmup - 1]
    tokens = sum(tokens_per_step[warmup:])
    step_times = [e - s for s, e in zip(ends[warmup - 1 : -1], ends[warmup:], strict=True)]
    return {
        "steps_timed": len(ends) - warmup,
        "wall_s": round(wall, 3),
        "tokens": tokens,
        "tokens_per_step": round(tokens / (len(ends) - warmup), 1),
        "tokens_per_s": round(tokens / wall, 1) if wall > 0 else None,
        "step_s_median": round(statistics.median(step_times), 4),
        "step_s_max": round(max(step_times), 4),
        "compute_s": round(sum(e - b for b, e in zip(begins[warmup:], ends[warmup:], strict=True)), 3),
    }


# ---------------------------------------------------------------------------------------------------------------------
# The project path


class _MainProcessTokens:
    """Non-padding tokens of the micro-batches the trainer actually trains on, counted in the main process.

    The project's TokenCounter wraps the collator, which runs inside dataloader workers when
    ``dataloader_num_workers > 0`` (the GPU recipes use 2), so its count never reaches the main process.
    """

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id
        self.total: torch.Tensor | int = 0  # a device tensor: counting must not add a host sync per micro-batch

    def add(self, inputs: dict[str, Any]) -> None:
        if "attention_mask" in inputs:
            count = inputs["attention_mask"].sum()
        else:  # packed rows: right padding is the only place the pad token appears
            count = (inputs["input_ids"] != self.pad_token_id).sum()
        self.total = self.total + count

    def value(self) -> int:
        return int(self.total)


class _StepTimer(TrainerCallback):
    """Synchronised timestamps at each optimizer step's begin and end, with the token counts at those moments."""

    def __init__(self, device: torch.device, counter: _MainProcessTokens, token_counter: Any) -> None:
        self.device = device
        self.counter = counter
        self.token_counter = token_counter
        self.begins: list[float] = []
        self.ends: list[float] = []
        self.tokens: list[int] = []
        self.counter_tokens: list[int] = []

    def on_step_begin(self, args, state, control, **kwargs):
        _sync(self.device)
        self.begins.append(time.perf_counter())

    def on_step_end(self, args, state, control, **kwargs):
        _sync(self.device)
        self.ends.append(time.perf_counter())
        self.tokens.append(self.counter.value())
        self.counter_tokens.append(self.token_counter.tokens if self.token_counter is not None else 0)


class _DataCache:
    """Reuses data preparation across configurations: every recipe shares the same data settings, so tokenising
    (per example, the slow part) once is enough. Keys hold every input the preparation reads, so a recipe whose data
    settings differ is prepared afresh."""

    # The SFTConfig fields that SFTTrainer._prepare_dataset reads.
    SFT_DATA_FIELDS = (
        "max_length",
        "packing_strategy",
        "seed",
        "shuffle_dataset",
        "truncation_mode",
        "dataset_text_field",
        "assistant_only_loss",
        "eos_token",
        "pad_token",
    )

    def __init__(self) -> None:
        self.prepared: dict[str, Any] = {}
        self.tokenized: dict[tuple, Any] = {}
        self.hits = 0
        self._originals: tuple[Callable, Callable] | None = None

    def __enter__(self) -> _DataCache:
        original_prepare = training.prepare_datasets
        original_tokenize = training.SFTTrainer._prepare_dataset
        self._originals = (original_prepare, original_tokenize)
        cache = self

        def prepare_datasets(data_args, training_args, tokenizer):
            key = json.dumps(
                [asdict(data_args), training_args.max_length, tokenizer.name_or_path], sort_keys=True, default=str
            )
            if key in cache.prepared:
                cache.hits += 1
            else:
                cache.prepared[key] = original_prepare(data_args, training_args, tokenizer)
            return cache.prepared[key]

        def _prepare_dataset(trainer, dataset, processing_class, args, packing, formatting_func, dataset_name):
            # id(dataset) is stable and unique: the datasets come from the cache above, which keeps them alive.
            key = (
                id(dataset),
                dataset_name,
                packing,
                formatting_func is None,
                trainer.completion_only_loss,
                getattr(trainer, "chat_template", None),
                getattr(processing_class, "name_or_path", None),
                getattr(processing_class, "eos_token", None),
                json.dumps({f: getattr(args, f, None) for f in cache.SFT_DATA_FIELDS}, sort_keys=True, default=str),
            )
            if key in cache.tokenized:
                cache.hits += 1
            else:
                cache.tokenized[key] = original_tokenize(
                    trainer, dataset, processing_class, args, packing, formatting_func, dataset_name
                )
            return cache.tokenized[key]

        training.prepare_datasets = prepare_datasets
        training.SFTTrainer._prepare_dataset = _prepare_dataset
        return self

    def __exit__(self, *exc: object) -> None:
        if self._originals is not None:
            training.prepare_datasets, training.SFTTrainer._prepare_dataset = self._originals


def _parse_recipe(
    recipe: Path, sources: Sources, out_dir: Path, args: BenchArguments, device: torch.device, max_samples: int
) -> tuple[DataArguments, MathSFTConfig, Any]:
    from trl import ModelConfig, TrlParser

    argv = [
        "--config", str(recipe),
        "--model_name_or_path", sources.model_path,
        "--dataset_name", sources.data_path,
        "--output_dir", str(out_dir),
        "--max_steps", str(args.warmup_steps + args.steps),
        "--max_train_samples", str(max_samples),
        "--max_eval_samples", "8",  # validation is prepared but never run: keep its preparation trivial
        "--report_to", "none",
        "--save_strategy", "no",
        "--eval_strategy", "no",
        "--disable_tqdm", "true",
    ]  # fmt: skip
    if device.type == "cpu":  # CPU smoke runs: no autocast, no worker processes
        argv += ["--use_cpu", "true", "--bf16", "false", "--dataloader_num_workers", "0"]
    argv += shlex.split(args.recipe_overrides)
    parser = TrlParser((DataArguments, MathSFTConfig, ModelConfig))
    try:
        data_args, training_args, model_args = parser.parse_args_and_config(args=argv)
    except SystemExit as err:  # argparse exits on an unknown or malformed argument: make it one line, not an exit
        raise UserError(f"{recipe}: bad arguments {shlex.join(argv[2:])!r}") from err
    except (FileNotFoundError, ValueError, TypeError) as err:
        raise UserError(f"{recipe}: {str(err).splitlines()[0]}") from err
    validate_args(data_args, training_args, model_args)
    return data_args, training_args, model_args


def _run_project(
    recipe: Path, sources: Sources, out_dir: Path, args: BenchArguments, device: torch.device, max_samples: int
) -> dict[str, Any]:
    build_start = time.perf_counter()
    data_args, training_args, model_args = _parse_recipe(recipe, sources, out_dir, args, device, max_samples)
    trainer, data, _ = training.build_trainer(data_args, training_args, model_args)
    counter = _MainProcessTokens(trainer.processing_class.pad_token_id)
    original_step = trainer.training_step

    def training_step(model, inputs, num_items_in_batch=None):
        counter.add(inputs)
        return original_step(model, inputs, num_items_in_batch)

    trainer.training_step = training_step  # per instance: the class stays untouched
    trainer.remove_callback(PrinterCallback)  # keeps stdout for the table (logs are still computed every 5 steps)
    timer = _StepTimer(device, counter, trainer.token_counter)
    trainer.add_callback(timer)
    build_s = time.perf_counter() - build_start

    _sync(device)
    train_start = time.perf_counter()
    trainer.train()
    if len(timer.ends) < args.warmup_steps + args.steps:
        raise RuntimeError(f"the trainer stopped after {len(timer.ends)} steps; more training data needed")
    tokens_per_step = [b - a for a, b in zip([0] + timer.tokens[:-1], timer.tokens, strict=True)]
    result = _timing(timer.ends, timer.begins, tokens_per_step, args.warmup_steps)
    w = args.warmup_steps
    micro, accum = training_args.per_device_train_batch_size, training_args.gradient_accumulation_steps
    rows = len(trainer.train_dataset)
    checkpointing_active = any(getattr(m, "gradient_checkpointing", False) is True for m in trainer.model.modules())
    result |= {
        "build_s": round(build_s, 2),
        "first_steps_s": round(timer.ends[w - 1] - train_start, 2),  # dataloader start-up and warm-up steps
        "recipe": str(recipe.relative_to(REPO) if recipe.is_relative_to(REPO) else recipe),
        "micro_batch": micro,
        "grad_accum": accum,
        "max_length": training_args.max_length,
        "packing": training_args.packing,
        "weights": str(model_args.dtype or "float32"),
        "autocast": "bf16" if training_args.bf16 else "fp16" if training_args.fp16 else None,
        "activation_checkpointing": bool(training_args.activation_checkpointing),
        "checkpointing_active": checkpointing_active,  # what the model does, not just what the recipe asked for
        "attn_implementation": model_args.attn_implementation,
        "dataloader_num_workers": training_args.dataloader_num_workers,
        "train_examples": len(data.train),
        "packed_rows": rows,
        "steps_per_epoch": -(-rows // (micro * accum)),
        # The project's own counter over the same window; 0 when the collator runs in dataloader workers.
        "token_counter_tokens": timer.counter_tokens[-1] - timer.counter_tokens[w - 1],
        "last_loss": next((round(e["loss"], 4) for e in reversed(trainer.state.log_history) if "loss" in e), None),
    }
    del trainer, data, timer  # the training_step closure's cycle goes with the next gc.collect()
    return result


# ---------------------------------------------------------------------------------------------------------------------
# Reporting


def _add_derived(result: dict[str, Any]) -> None:
    """Speedup vs the course loop of the same method (same run), MFU, and the lean profile's memory verdicts."""
    peak = result["matmul_peak_tflops"]
    n_params = result["model"]["parameters"]["N"]
    course = {r["method"]: r for r in result["results"] if r["setup"] == "course" and r["status"] == "ok"}
    for r in result["results"]:
        r["flops_per_token"] = (4 if r["method"] == "lora" else 6) * n_params
        ok = r["status"] == "ok" and r.get("tokens_per_s")
        r["mfu"] = round(r["tokens_per_s"] * r["flops_per_token"] / (peak * 1e12), 4) if ok and peak else None
        base = course.get(r["method"])
        r["speedup_vs_course"] = round(r["tokens_per_s"] / base["tokens_per_s"], 2) if ok and base else None
        if r["setup"] == "lean":
            r["memory_target_gib"] = MEMORY_TARGET_GIB[r["method"]]
            alloc = r.get("peak_allocated_gib")
            r["fits_target"] = alloc <= r["memory_target_gib"] if alloc is not None else None


def _millions(n: int) -> str:
    return f"{n / 1e6:,.1f}M" if n >= 1e6 else f"{n:,}"


def _fmt(value: Any, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def _markdown(result: dict[str, Any]) -> str:
    env, model, data = result["environment"], result["model"], result["data"]
    cuda = result["device"] == "cuda"
    peak = result["matmul_peak_tflops"]
    params = model["parameters"]
    lines = [
        "# Training throughput",
        "",
        f"{env['device_name']}, {env['date']}; torch {env['torch']}, transformers {env['transformers']}, "
        f"trl {env['trl']}, peft {env['peft']}.",
        f"bf16 matmul peak ({result['arguments']['matmul_size']}^3, measured): "
        + (f"{peak:,.0f} TFLOP/s." if peak else "not measured (CPU)."),
        f"Model: {model['description']}; N = {_millions(params['N'])} parameters "
        f"({_millions(params['non_embedding'])} non-embedding + {_millions(params['embedding'])} embedding"
        f"{', tied to the LM head' if params['tied_embeddings'] else ''}).",
        f"Data: {data['data_path']} (up to {data['max_train_samples']} training examples of the seeded split), "
        f"tokenizer {data['tokenizer']}. {result['arguments']['warmup_steps']} warm-up + "
        f"{result['arguments']['steps']} timed optimizer steps per configuration.",
        "",
    ]
    memory_header = "peak alloc / reserved GiB" if cuda else "peak RSS GiB (process so far)"
    lines += [
        f"| setup | method | tokens/s | speedup vs course | MFU | {memory_header} | lean target | tokens/step "
        "| steps timed |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for r in result["results"]:
        if r["status"] != "ok":
            error = r["error"].replace("|", "/").replace("\n", " ")[:160]
            lines.append(f"| {r['setup']} | {r['method']} | failed: {error} | | | | | | |")
            continue
        if cuda:
            memory = f"{_fmt(r['peak_allocated_gib'], '.2f')} / {_fmt(r['peak_reserved_gib'], '.2f')}"
        else:
            memory = _fmt(r["peak_rss_gib"], ".2f")
        target = "-"
        if r.get("memory_target_gib") is not None:
            verdict = {True: "fits", False: "over", None: "n/a"}[r["fits_target"]]
            target = f"{verdict} {r['memory_target_gib']:.0f} GiB"
        lines.append(
            f"| {r['setup']} | {r['method']} | {_fmt(r['tokens_per_s'], ',.0f')} | "
            f"{_fmt(r['speedup_vs_course'], '.2f', 'x')} | {_fmt(r['mfu'], '.1%')} | {memory} | {target} | "
            f"{_fmt(r['tokens_per_step'], ',.0f')} | {r['steps_timed']} |"
        )
    lines += [
        "",
        "- course: plain PyTorch, bf16 weights, batch "
        f"{result['arguments']['course_batch_size']} x accumulation {result['arguments']['course_grad_accum']}, "
        f"padded to the longest, max_length {result['arguments']['course_max_length']} (longer examples dropped), "
        "loss from full logits.",
        f"- fast: `{result['arguments']['fast_recipes']}/<method>.yaml`; lean: `{result['arguments']['lean_recipes']}"
        "/<method>.yaml`, run through `mathsft.training.build_trainer` (SFTTrainer) unchanged except for max_steps, "
        "no evaluation, no checkpoints.",
        "- tokens/s: non-padding tokens / wall time from the end of the last warm-up step to the end of the last "
        "timed step. Speedup: against the course loop of the same method in this run.",
        "- MFU: tokens/s x 6N (4N for LoRA) / the matmul peak above. Lean target: peak allocated memory against "
        "16 GiB (AdamW, SGD) or 8 GiB (LoRA); the CUDA context (~0.5 GiB) comes on top.",
        "",
    ]
    return "\n".join(lines)


def _write(out_dir: Path, result: dict[str, Any]) -> None:
    _add_derived(result)
    (out_dir / "train_throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "train_throughput.md").write_text(_markdown(result))


# ---------------------------------------------------------------------------------------------------------------------


def _parse_list(value: str, valid: tuple[str, ...], flag: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in items if v not in valid]
    if unknown or not items:
        raise UserError(f"{flag}: unknown or empty {unknown or value!r}; choose from {', '.join(valid)}")
    return [v for v in valid if v in items]  # canonical order: the course baseline first


def _absolute(path: Path) -> Path:
    return path if path.is_absolute() else REPO / path  # recipe folders are relative to the repository


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@exit_on_user_error
def main(argv: list[str] | None = None) -> dict[str, Any]:
    (args,) = HfArgumentParser(BenchArguments).parse_args_into_dataclasses(args=argv)
    methods = _parse_list(args.methods, METHODS, "--methods")
    setups = _parse_list(args.setups, SETUPS, "--setups")
    if args.warmup_steps < 1 or args.steps < 1:
        raise UserError("--warmup_steps and --steps must be at least 1 (timing starts at the end of a warm-up step)")
    device = _resolve_device(args.device)
    sources = _resolve_sources(args)
    # ~50 examples make one 16-row step of the recipes; 80 per step leaves room for the examples max_length drops.
    max_samples = args.max_train_samples or max(1000, 80 * (args.warmup_steps + args.steps))

    logging.getLogger("transformers").setLevel(logging.ERROR)
    import datasets

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()

    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = tempfile.TemporaryDirectory(prefix="train_throughput_")
    try:
        random_model = not sources.model_path
        if random_model:
            sources.model_path = str(Path(work.name) / "model")  # saved there below, loaded by path like a checkpoint
        recipe_dirs = {"fast": Path(args.fast_recipes), "lean": Path(args.lean_recipes)}
        recipes = {
            (setup, method): _absolute(recipe_dirs[setup] / f"{method}.yaml")
            for setup in setups
            if setup != "course"
            for method in methods
        }
        for recipe in recipes.values():  # a missing recipe or a bad override fails now, not after minutes of runs
            _parse_recipe(recipe, sources, Path(work.name) / "check", args, device, max_samples)

        peak = None
        if device.type == "cuda":
            _log(f"timing a {args.matmul_size}^3 bf16 matmul ...")
            peak = round(_matmul_peak_tflops(args.matmul_size, device), 1)
            _free_memory(device)
        if random_model:
            _log("building the random model ...")
            _save_random_model(sources, Path(sources.model_path), args.seed, device)
        versions = library_versions()
        result: dict[str, Any] = {
            "environment": {
                "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                "device_name": _device_name(device),
                **versions,
                "cuda": torch.version.cuda,
            },
            "device": device.type,
            "matmul_peak_tflops": peak,
            "model": {
                "description": sources.model_description,
                "parameters": _count_parameters(sources.config_path),
                "N_used": "all parameters once (embedding tied to the LM head counted once); 6N per token, 4N LoRA",
            },
            "data": {
                "data_path": sources.data_path,
                "tokenizer": sources.tokenizer_path,
                "max_train_samples": max_samples,
            },
            "arguments": asdict(args),
            "results": [],
        }
        course_examples: list[CourseExample] = []
        pad_id = 0
        if "course" in setups:
            _log("tokenising the course loop's examples ...")
            tokenizer = AutoTokenizer.from_pretrained(sources.model_path)
            pad_id = tokenizer.pad_token_id
            course_examples, dropped = _course_examples(
                tokenizer, _train_examples(sources.data_path, max_samples), args.course_max_length
            )
            result["data"]["course_examples"] = len(course_examples)
            result["data"]["course_dropped_over_max_length"] = dropped

        with _DataCache() if args.cache_data else _NoCache() as cache:
            for setup in setups:
                for method in methods:
                    _log(f"[{setup} / {method}] ...")
                    _free_memory(device)
                    entry: dict[str, Any] = {"setup": setup, "method": method}
                    if device.type == "cuda":
                        entry["allocated_at_start_gib"] = round(torch.cuda.memory_allocated(device) / GIB, 3)
                    try:
                        if setup == "course":
                            run = _run_course(method, sources.model_path, course_examples, pad_id, args, device)
                        else:
                            run_dir = Path(work.name) / f"{setup}-{method}"
                            run = _run_project(recipes[setup, method], sources, run_dir, args, device, max_samples)
                        entry |= {"status": "ok", "error": None, **run, **_memory(device)}
                    except Exception as err:  # one failing configuration (e.g. OOM) must not lose the others
                        entry |= {
                            "status": "error",
                            "error": f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err) else ''}",
                            "traceback": traceback.format_exc(limit=-6),
                            **_memory(device),
                        }
                    _log(json.dumps({k: v for k, v in entry.items() if k != "traceback"}))
                    result["results"].append(entry)
                    result["data_cache_hits"] = cache.hits
                    _write(out_dir, result)  # after each configuration: a crash or timeout keeps what was measured
        _free_memory(device)
    finally:
        work.cleanup()
    print(_markdown(result))
    return result


class _NoCache:
    hits = 0

    def __enter__(self) -> _NoCache:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


if __name__ == "__main__":
    main()
