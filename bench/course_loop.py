"""The course notebook's training loop, re-implemented as the baseline of the training bench.

bf16 weights (``model.to(bfloat16)``), batches of 2 padded to the longest, gradient accumulation 4, max_length 512
(longer examples dropped), completion-only labels, ``model(input_ids, attention_mask, labels).loss`` (full logits).
The optimizer is the method's own builder from the registry (``mathsft.methods``) with the course's settings:
torch's defaults (AdamW: betas 0.9/0.999, weight decay 0.01; SGD: momentum 0.9, no decay) and the course's
learning rate of the method. A PEFT method gets the course's LoRA (r=16, alpha=32, dropout 0.05, every projection).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch
from transformers import AutoModelForCausalLM

from bench.common import sync
from bench.timing import timing_summary
from mathsft.configs import ALL_LINEAR_PROJECTIONS, DataArguments
from mathsft.errors import UserError
from mathsft.methods import Method
from mathsft.template import CHAT_TEMPLATE_KWARGS, build_example

# torch.optim's defaults, which the course notebook used; the learning rate comes from the method's registry entry.
COURSE_OPTIMIZER_SETTINGS = {
    "adam_beta1": 0.9, "adam_beta2": 0.999, "adam_epsilon": 1e-8,
    "sgd_momentum": 0.9, "sgd_nesterov": False, "sgd_dampening": 0.0,
}  # fmt: skip
COURSE_WEIGHT_DECAY = {"adamw": 0.01, "sgd": 0.0}  # torch.optim.AdamW's and SGD's default weight decay


@dataclass
class CourseSettings:
    batch_size: int = 2
    grad_accum: int = 4
    max_length: int = 512
    seed: int = 0


@dataclass
class CourseExample:
    input_ids: list[int]
    labels: list[int]


def course_examples(tokenizer: Any, train: Any, max_length: int) -> tuple[list[CourseExample], int]:
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


def course_batches(examples: list[CourseExample], batch_size: int, pad_id: int, seed: int) -> Iterator[dict]:
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


def course_model_and_optimizer(method: Method, model_path: str, device: torch.device) -> tuple[Any, Any]:
    """bf16 weights on the device (a LoRA model for a PEFT method) and the method's optimizer, course settings."""
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.bfloat16).to(device)  # course: bf16 weights
    model.train()
    if method.peft:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=16, lora_alpha=32, lora_dropout=0.05, target_modules=list(ALL_LINEAR_PROJECTIONS), task_type="CAUSAL_LM"
        )
        model = get_peft_model(model, lora)
    params = [p for p in model.parameters() if p.requires_grad]
    settings = SimpleNamespace(learning_rate=method.course_learning_rate, **COURSE_OPTIMIZER_SETTINGS)
    if method.optimizer not in COURSE_WEIGHT_DECAY:
        raise UserError(f"the course loop has no settings for optimizer '{method.optimizer}' (method {method.name})")
    groups = [{"params": params, "weight_decay": COURSE_WEIGHT_DECAY[method.optimizer]}]
    return model, method.build_optimizer(groups, settings, False)  # the course used the default (foreach) kernels


def run_course(
    method: Method, model_path: str, examples: list[CourseExample], pad_id: int, steps: tuple[int, int],
    course: CourseSettings, device: torch.device,
) -> dict[str, Any]:  # fmt: skip
    """Time ``steps = (warm-up, timed)`` optimizer steps of the course loop."""
    build_start = time.perf_counter()
    model, optimizer = course_model_and_optimizer(method, model_path, device)
    batches = course_batches(examples, course.batch_size, pad_id, course.seed)
    build_s = time.perf_counter() - build_start

    ends: list[float] = []
    tokens_per_step: list[int] = []
    losses: list[float] = []
    sync(device)
    start = time.perf_counter()
    for _ in range(sum(steps)):
        step_tokens = 0
        for _ in range(course.grad_accum):
            batch = next(batches)
            step_tokens += int(batch["attention_mask"].sum())  # non-padding tokens, counted on the CPU: no sync
            loss = model(**{k: v.to(device) for k, v in batch.items()}).loss / course.grad_accum
            loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item() * course.grad_accum)  # the notebook prints the loss: one sync per step
        sync(device)
        ends.append(time.perf_counter())
        tokens_per_step.append(step_tokens)
    result = timing_summary(ends, [start] + ends[:-1], tokens_per_step, steps[0])
    result |= {
        "build_s": round(build_s, 2),
        "micro_batch": course.batch_size,
        "grad_accum": course.grad_accum,
        "max_length": course.max_length,
        "weights": "bf16",
        "autocast": None,
        "activation_checkpointing": False,
        "attn_implementation": model.config._attn_implementation,
        "optimizer": type(optimizer).__name__,
        "learning_rate": method.course_learning_rate,
        "step_losses": [round(x, 5) for x in losses],
        "last_loss": round(losses[-1], 4),
        "train_examples": len(examples),
    }
    del model, optimizer, batches
    return result
