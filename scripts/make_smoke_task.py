"""Build the learnable smoke task: a synthetic arithmetic domain, a tiny Qwen3-architecture base model pretrained
on plain text of that domain, and MATH-style SFT and test sets in which every solution ends in ``\\boxed{}``.

The base model knows the domain (it completes "What is $47 + 38$?" with "$47 + 38 = 47 + 30 + 8 = 77 + 8 = 85$.")
but has never seen the chat template or a boxed answer, just as Qwen3-0.6B-Base knows maths but not the course's
chat format. Fine-tuning on the SFT set teaches it the format, so the smoke study shows a real accuracy gain on CPU,
offline, in minutes.

    python scripts/make_smoke_task.py --output assets/smoke-task          # data, tokenizer, pretraining: 4-7 min
    python scripts/make_smoke_task.py --output /tmp/x --data_only true    # only data/ (seconds)

Everything is seeded. The data files are byte-for-byte reproducible; the weights are reproducible on the same
CPU type, thread count and torch version (float reduction order differs between CPU kernels).
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing the package
sys.path.insert(0, str(Path(__file__).resolve().parent))

from make_smoke_assets import build_tokenizer, write_jsonl  # noqa: E402

LEVELS = (1, 2, 3)
NUM_TRAIN, NUM_TEST = 1200, 240  # 10% of train is held out for validation loss by the recipes
TEST_SEED, TRAIN_SEED, CORPUS_SEED, MODEL_SEED = 101, 202, 303, 505


@dataclass(frozen=True)
class Item:
    """One problem of the domain: the question, the worked lines (plain text, no box) and the answer."""

    subject: str
    level: int
    key: tuple  # what makes two problems the same problem, whatever the phrasing
    question: str
    work: str
    answer: int
    statement: str  # the same fact as one plain sentence, for the pretraining text

    def solution(self) -> str:
        """The SFT solution: the worked lines, then the answer in the course's format."""
        return f"{self.work} The answer is $\\boxed{{{self.answer}}}$."


def _digits(rng: random.Random, count: int) -> int:
    """A random number with ``count`` digits (1-9 for one digit)."""
    return rng.randint(10 ** (count - 1) if count > 1 else 1, 10**count - 1)


def _place_parts(n: int) -> list[int]:
    """652 -> [600, 50, 2]: the non-zero place values, largest first."""
    text = str(n)
    parts = [int(d) * 10 ** (len(text) - 1 - i) for i, d in enumerate(text) if d != "0"]
    return parts or [0]


def _running_chain(a: int, b: int, sign: int) -> str:
    """a + b (or a - b) one place value of b at a time: 652 + 467 = 652 + 400 + 60 + 7 = 1052 + 60 + 7 = ..."""
    op = " + " if sign > 0 else " - "
    parts = _place_parts(b)
    terms = [f"{a}{op}{b}"]
    total = a
    while parts:
        terms.append(op.join(str(x) for x in [total, *parts]))
        total += sign * parts.pop(0)
    terms.append(str(total))
    if len(terms) == 3:  # a single place value: the chain would only repeat the question
        terms.pop(1)
    return " = ".join(terms)


def _operands(rng: random.Random, level: int) -> tuple[int, int]:
    """Level 1: two one-digit numbers; level 2: two two-digit numbers; level 3: a three-digit and a two-digit one."""
    return _digits(rng, level), _digits(rng, min(level, 2))


def _addition(rng: random.Random, level: int) -> Item:
    a, b = _operands(rng, level)
    return Item(
        "Addition", level, ("add", a, b), f"What is ${a} + {b}$?", f"${_running_chain(a, b, 1)}$.", a + b,
        f"The sum of ${a}$ and ${b}$ is ${a + b}$.",
    )  # fmt: skip


def _subtraction(rng: random.Random, level: int) -> Item:
    a, b = sorted(_operands(rng, level), reverse=True)
    return Item(
        "Subtraction", level, ("sub", a, b), f"What is ${a} - {b}$?", f"${_running_chain(a, b, -1)}$.", a - b,
        f"The difference of ${a}$ and ${b}$ is ${a - b}$.",
    )  # fmt: skip


def _multiplication(rng: random.Random, level: int) -> Item:
    a, b = _digits(rng, level), rng.randint(2, 9)
    parts = _place_parts(a)
    terms = [f"{a} \\cdot {b}"]
    if len(parts) > 1:
        terms.append(" + ".join(f"{p} \\cdot {b}" for p in parts))
        products = [p * b for p in parts]
        terms.append(" + ".join(str(p) for p in products))
        while len(products) > 2:  # add the partial products two at a time, largest first
            products = [products[0] + products[1], *products[2:]]
            terms.append(" + ".join(str(p) for p in products))
    terms.append(str(a * b))
    return Item(
        "Multiplication", level, ("mul", a, b), f"What is ${a} \\cdot {b}$?", f"${' = '.join(terms)}$.", a * b,
        f"The product of ${a}$ and ${b}$ is ${a * b}$.",
    )  # fmt: skip


def _long_division(a: int, b: int) -> tuple[list[str], int, int]:
    """Long division of a by a one-digit b, one line per step that divides: 65 = 7 \\cdot 9 + 2, 22 = 7 \\cdot 3 + 1."""
    steps, carry, quotient = [], 0, 0
    for digit in str(a):
        current = carry * 10 + int(digit)
        q, carry = divmod(current, b)
        quotient = quotient * 10 + q
        if current >= b or steps:
            steps.append(f"${current} = {b} \\cdot {q} + {carry}$")
    if not steps:
        steps.append(f"${a} = {b} \\cdot 0 + {a}$")
    return steps, quotient, carry


def _remainder(rng: random.Random, level: int) -> Item:
    b = rng.randint(2, 9)
    # Level 1: a one-digit quotient (one step); level 2: a two-digit quotient (two steps); level 3: a 3-digit a.
    # All three are drawn, so every level takes the same random numbers from the stream.
    a = (rng.randint(b + 1, 10 * b - 1), rng.randint(10 * b, 99), _digits(rng, 3))[level - 1]
    steps, q, r = _long_division(a, b)
    work = ", ".join(steps) + "." if len(steps) == 1 else ", ".join(steps) + f", so ${a} = {b} \\cdot {q} + {r}$."
    return Item(
        "Remainders", level, ("mod", a, b), f"What is the remainder when ${a}$ is divided by ${b}$?", work, r,
        f"When ${a}$ is divided by ${b}$, the quotient is ${q}$ and the remainder is ${r}$.",
    )  # fmt: skip


def _gcd(rng: random.Random, level: int) -> Item:
    top = (20, 50, 99)[level - 1]
    g = rng.randint(2, 9)
    m, n = rng.sample(range(1, top // g + 1), 2)  # top // g >= 2: there are always two multipliers
    a, b = g * m, g * n
    steps, x, y = [], max(a, b), min(a, b)
    while y:
        steps.append(f"${x} = {x // y} \\cdot {y} + {x % y}$")
        x, y = y, x % y
    return Item(
        "GCD", level, ("gcd", min(a, b), max(a, b)), f"What is the greatest common divisor of ${a}$ and ${b}$?",
        ", ".join(steps) + ".", x, f"The greatest common divisor of ${a}$ and ${b}$ is ${x}$.",
    )  # fmt: skip


def _linear(rng: random.Random, level: int) -> Item:
    """Level 1: ax + b = c with one-digit b; level 2: two-digit b; level 3: x on both sides."""
    a, x = rng.randint(2, 9), rng.randint(1, 9)
    b = _digits(rng, 1 if level == 1 else 2)
    if level < 3:
        c = a * x + b
        return Item(
            "Linear Equations", level, ("lin", a, b, c), f"Solve for $x$: ${a}x + {b} = {c}$.",
            f"${a}x = {c} - {b} = {c - b}$, so $x = \\frac{{{c - b}}}{{{a}}} = {x}$.", x,
            f"The solution of ${a}x + {b} = {c}$ is $x = {x}$.",
        )  # fmt: skip
    a = max(a, 3)
    e = rng.randint(1, a - 2)  # a - e >= 2: the last step is a real division
    d = (a - e) * x + b
    return Item(
        "Linear Equations", level, ("lin2", a, b, e, d), f"Solve for $x$: ${a}x + {b} = {e}x + {d}$.",
        f"${a}x - {e}x = {d} - {b}$, so ${a - e}x = {d - b}$ and $x = \\frac{{{d - b}}}{{{a - e}}} = {x}$.", x,
        f"The solution of ${a}x + {b} = {e}x + {d}$ is $x = {x}$.",
    )  # fmt: skip


GENERATORS: dict[str, Callable[[random.Random, int], Item]] = {
    "Addition": _addition,
    "Subtraction": _subtraction,
    "Multiplication": _multiplication,
    "Remainders": _remainder,
    "GCD": _gcd,
    "Linear Equations": _linear,
}
SUBJECTS = list(GENERATORS)


def _items(seed: int, excluded: set[tuple]) -> Iterator[Item]:
    """Endless items, round-robin over subject and level, never one whose key is excluded."""
    rng = random.Random(seed)
    cells = [(subject, level) for subject in SUBJECTS for level in LEVELS]
    turn = 0
    while True:
        subject, level = cells[turn % len(cells)]
        turn += 1
        item = GENERATORS[subject](rng, level)
        if item.key not in excluded:
            yield item


def make_split(count: int, seed: int, split: str, excluded: set[tuple]) -> tuple[list[dict], set[tuple]]:
    """``count`` distinct problems as MATH rows, none with an excluded key; also returns their keys."""
    rows, keys = [], set()
    for attempt, item in enumerate(_items(seed, excluded)):
        if len(rows) == count:
            break
        if attempt > 100 * count:
            raise ValueError(f"the domain has too few distinct problems for {count} {split} problems")
        if item.key in keys:
            continue
        keys.add(item.key)
        slug = item.subject.lower().replace(" ", "_")
        rows.append(
            {
                "problem": item.question,
                "solution": item.solution(),
                "answer": str(item.answer),
                "subject": item.subject,
                "level": item.level,
                "unique_id": f"{split}/{slug}/{len(rows)}.json",
            }
        )
    return rows, keys


def make_data(num_train: int, num_test: int) -> tuple[list[dict], list[dict], set[tuple]]:
    """The test set first, then a train set that shares no problem with it. Returns both and the test keys."""
    test, test_keys = make_split(num_test, TEST_SEED, "test", set())
    train, _ = make_split(num_train, TRAIN_SEED, "train", test_keys)
    return train, test, test_keys


def table_line(rng: random.Random) -> str:
    """One fact of the tables the worked lines are built from: one-digit sums, differences and products, and the
    one-step divisions of long division."""
    kind = rng.randrange(4)
    a, b = rng.randint(0, 9), rng.randint(0, 9)
    if kind == 0:
        return f"${a} + {b} = {a + b}$."
    if kind == 1:
        return f"${a + b} - {b} = {a}$."
    if kind == 2:
        return f"${a} \\cdot {b} = {a * b}$."
    divisor = rng.randint(2, 9)
    n = rng.randint(0, 10 * divisor - 1)
    return f"${n} = {divisor} \\cdot {n // divisor} + {n % divisor}$."


# Plain sentences that may stand between a question and its worked lines, so that the base model learns to find
# the question a few dozen tokens back (in a chat prompt the instruction and the turn markers stand there).
ASIDES = [
    "Let us work it out step by step.",
    "We write out every step.",
    "Here is the computation.",
    "This is a short exercise.",
    "We go one place value at a time.",
    "The steps are below.",
    "Try it first, then check the work.",
    "This is how it is done by hand.",
    "Each step uses the tables.",
    "Read the numbers carefully.",
    "Write down each step on its own.",
    "The method is the usual one.",
]


def pretraining_text(item: Item, rng: random.Random) -> str:
    """One plain-text passage about an item: a worked question (sometimes with asides between the question and
    the work, sometimes with a closing sentence that states the answer, never boxed), the worked lines alone, or a
    statement."""
    choice = rng.random()
    if choice < 0.65:
        asides = " ".join(rng.sample(ASIDES, rng.randint(1, 2))) if rng.random() < 0.6 else ""
        closing = f" The answer is ${item.answer}$." if rng.random() < 0.5 else ""
        parts = [item.question, asides, item.work + closing]
        return "".join(part + rng.choice([" ", "\n"]) for part in parts if part).rstrip()
    if choice < 0.9:
        return item.work
    return item.statement


def make_corpus(num_lines: int, excluded: set[tuple], table_fraction: float = 0.4) -> list[str]:
    """Plain-text lines of the domain (no chat template, no box): table facts and worked problems, none of them
    a test problem (a one-digit test problem's fact is still in the tables, as a base model knows 4 + 9)."""
    rng = random.Random(CORPUS_SEED + 1)
    items = _items(CORPUS_SEED, excluded)
    lines = []
    while len(lines) < num_lines:
        lines.append(table_line(rng) if rng.random() < table_fraction else pretraining_text(next(items), rng))
    return lines


@dataclass
class ModelShape:
    hidden_size: int = 128
    intermediate_size: int = 384
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 32


def build_model(vocab_size: int, eos_token_id: int, shape: ModelShape, seed: int):
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    config = Qwen3Config(
        vocab_size=vocab_size,
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_key_value_heads,
        head_dim=shape.head_dim,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        rope_theta=10000.0,
        eos_token_id=eos_token_id,
        pad_token_id=eos_token_id,
        bos_token_id=None,
    )
    model = Qwen3ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=eos_token_id, pad_token_id=eos_token_id)
    return model


def token_blocks(tokenizer, lines: list[str], block_size: int):
    """The corpus as one token stream (lines end in a newline, documents of 8 lines in <|endoftext|>), cut into
    rows of ``block_size`` tokens."""
    import torch

    stream: list[int] = []
    for start in range(0, len(lines), 8):
        document = "\n".join(lines[start : start + 8]) + "\n"
        stream += tokenizer(document, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    rows = len(stream) // block_size
    return torch.tensor(stream[: rows * block_size]).view(rows, block_size)


def pretrain(
    model, blocks, steps: int, batch_size: int, learning_rate: float, seed: int, bf16: bool, log_every: int = 100
) -> None:
    """Plain causal-LM training: AdamW, linear warm-up then cosine decay, fixed data order; fp32 weights with
    optional bf16 autocast (about 1.3x faster on CPUs with bf16 instructions)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, betas=(0.9, 0.95), weight_decay=0.1)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))),
    )
    model.train()
    order = torch.randperm(len(blocks), generator=generator)
    start, position = time.time(), 0
    for step in range(steps):
        if position + batch_size > len(order):
            order, position = torch.randperm(len(blocks), generator=generator), 0
        batch = blocks[order[position : position + batch_size]]
        position += batch_size
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if (step + 1) % log_every == 0 or step == 0:
            print(f"pretrain step {step + 1}/{steps} loss {loss.item():.3f} ({time.time() - start:.0f} s)", flush=True)
    model.eval()


def write_data(out: Path, num_train: int, num_test: int) -> tuple[list[dict], list[dict], set[tuple]]:
    train, test, test_keys = make_data(num_train, num_test)
    write_jsonl(train, out / "data" / "train.jsonl")
    write_jsonl(test, out / "data" / "test.jsonl")
    return train, test, test_keys


def build_base_model(out: Path, args: argparse.Namespace, train: list[dict], test_keys: set[tuple]) -> None:
    """Tokenizer on the corpus and the SFT text, then the pretrained model, both saved to ``out/model``."""
    import torch

    from mathsft.template import INSTRUCTION

    torch.set_num_threads(args.threads)
    corpus = make_corpus(args.corpus_lines, test_keys)
    # The vocabulary also covers the SFT text, so "\\boxed" is one token whose embedding pretraining never trained.
    sft_texts = [row["problem"] + INSTRUCTION + "\n" + row["solution"] for row in train]
    tokenizer = build_tokenizer(corpus[:40_000] + sft_texts, args.vocab_size, digits_apart=True)
    blocks = token_blocks(tokenizer, corpus, args.block_size)
    model = build_model(len(tokenizer), tokenizer.eos_token_id, ModelShape(), seed=MODEL_SEED)
    print(
        f"pretraining a {sum(p.numel() for p in model.parameters()):,}-parameter model on {blocks.numel():,} tokens "
        f"of plain text ({args.steps} steps of {args.batch_size} x {args.block_size} tokens)",
        flush=True,
    )
    pretrain(model, blocks, args.steps, args.batch_size, args.learning_rate, seed=MODEL_SEED, bf16=args.bf16)
    tokenizer.save_pretrained(out / "model")
    model.save_pretrained(out / "model")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="assets/smoke-task", help="folder to write data/ and model/ into")
    parser.add_argument("--data_only", type=lambda s: s.lower() == "true", default=False, help="write data/ only")
    parser.add_argument("--num_train", type=int, default=NUM_TRAIN)
    parser.add_argument("--num_test", type=int, default=NUM_TEST)
    parser.add_argument("--vocab_size", type=int, default=512)
    parser.add_argument("--corpus_lines", type=int, default=160_000)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--block_size", type=int, default=128)
    parser.add_argument("--learning_rate", type=float, default=3e-3)
    parser.add_argument("--bf16", type=lambda s: s.lower() == "true", default=True, help="bf16 autocast")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the weights depend on it)")
    args = parser.parse_args()
    out = Path(args.output)
    start = time.time()
    train, test, test_keys = write_data(out, args.num_train, args.num_test)
    print(f"wrote {len(train)} train and {len(test)} test problems under {out / 'data'}", flush=True)
    if not args.data_only:
        build_base_model(out, args, train, test_keys)
        print(f"wrote the tokenizer and the pretrained model under {out / 'model'} in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
