"""Build the committed smoke assets: MATH-style sample problems, a small-vocabulary tokenizer with the Qwen3
special tokens and a ChatML template, and a tiny randomly initialised Qwen3-architecture model.

The assets let every recipe, test and the smoke study run offline on a CPU in about a minute.
Re-running this script reproduces them exactly (fixed seeds).

    python scripts/make_smoke_assets.py --output assets/smoke
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing the package

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]

# ChatML, rendered exactly like Qwen3's template for the cases this project uses: a final assistant turn and the
# generation prompt both carry an empty think block when thinking is disabled, so the prompt is a prefix of the chat.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message.role == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if loop.last %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{{- message.content + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)


def _linear_equation(rng: random.Random) -> tuple[str, str, str, str, int]:
    a, x, b = rng.randint(2, 9), rng.randint(-12, 15), rng.randint(1, 30)
    c = a * x + b
    problem = f"Solve for $x$: ${a}x + {b} = {c}$."
    solution = (
        f"Subtracting ${b}$ from both sides gives ${a}x = {c - b}$. "
        f"Dividing both sides by ${a}$ gives $x = \\boxed{{{x}}}$."
    )
    return problem, solution, str(x), "Algebra", 1 + (abs(x) > 9)


def _arithmetic(rng: random.Random) -> tuple[str, str, str, str, int]:
    a, b, c = rng.randint(3, 25), rng.randint(3, 25), rng.randint(1, 60)
    value = a * b - c
    problem = f"What is the value of ${a} \\cdot {b} - {c}$?"
    solution = f"First multiply: ${a} \\cdot {b} = {a * b}$. Then subtract: ${a * b} - {c} = \\boxed{{{value}}}$."
    return problem, solution, str(value), "Prealgebra", 1


def _gcd(rng: random.Random) -> tuple[str, str, str, str, int]:
    g = rng.choice([2, 3, 4, 6, 7, 9, 12, 14, 15])
    m, n = rng.sample([2, 3, 5, 7, 11, 13], 2)
    a, b = g * m * rng.choice([1, 2]), g * n
    steps, x, y = [], max(a, b), min(a, b)
    while y:
        steps.append(f"${x} = {x // y} \\cdot {y} + {x % y}$")
        x, y = y, x % y
    problem = f"What is the greatest common divisor of ${a}$ and ${b}$?"
    solution = (
        "We use the Euclidean algorithm: " + ", ".join(steps) + f". So the greatest common divisor is $\\boxed{{{x}}}$."
    )
    return problem, solution, str(x), "Number Theory", 2 + (x > 10)


def _arrangements(rng: random.Random) -> tuple[str, str, str, str, int]:
    n = rng.randint(3, 7)
    value = math.factorial(n)
    product = " \\cdot ".join(str(k) for k in range(n, 0, -1))
    things = rng.choice(
        ["different books be arranged on a shelf", "students stand in a line", "distinct letters be ordered"]
    )
    problem = f"In how many ways can ${n}$ {things}?"
    solution = (
        f"There are ${n}$ choices for the first position, ${n - 1}$ for the second, and so on. "
        f"So there are ${n}! = {product} = \\boxed{{{value}}}$ arrangements."
    )
    return problem, solution, str(value), "Counting & Probability", 2


def _committee(rng: random.Random) -> tuple[str, str, str, str, int]:
    n, k = rng.randint(5, 12), 2
    value = math.comb(n, k)
    problem = f"A club has ${n}$ members. In how many ways can a committee of ${k}$ members be chosen?"
    solution = (
        f"The order does not matter, so the answer is $\\binom{{{n}}}{{2}} = \\frac{{{n} \\cdot {n - 1}}}{{2}} = "
        f"\\boxed{{{value}}}$."
    )
    return problem, solution, str(value), "Counting & Probability", 3


def _rectangle(rng: random.Random) -> tuple[str, str, str, str, int]:
    length, width = rng.randint(3, 20), rng.randint(2, 15)
    if rng.random() < 0.5:
        problem = (
            f"A rectangle has length ${length}$ cm and width ${width}$ cm. What is its area, in square centimeters?"
        )
        solution = (
            f"The area of a rectangle is length times width: ${length} \\cdot {width} = \\boxed{{{length * width}}}$."
        )
        return problem, solution, str(length * width), "Geometry", 1
    problem = f"A rectangle has length ${length}$ and width ${width}$. What is its perimeter?"
    value = 2 * (length + width)
    solution = f"The perimeter is $2({length} + {width}) = 2 \\cdot {length + width} = \\boxed{{{value}}}$."
    return problem, solution, str(value), "Geometry", 1


def _quadratic_roots(rng: random.Random) -> tuple[str, str, str, str, int]:
    r, s = rng.randint(1, 9), rng.randint(1, 9)
    p, q = r + s, r * s
    problem = f"What is the sum of the roots of $x^2 - {p}x + {q} = 0$?"
    solution = (
        f"The quadratic factors as $(x - {r})(x - {s}) = 0$, so the roots are ${r}$ and ${s}$. "
        f"Their sum is ${r} + {s} = \\boxed{{{p}}}$."
    )
    return problem, solution, str(p), "Intermediate Algebra", 3


def _fraction(rng: random.Random) -> tuple[str, str, str, str, int]:
    a, b = rng.sample(range(1, 10), 2)
    g = math.gcd(a, b)
    a, b = a // g, b // g
    if b == 1:
        b = 7
    k = rng.randint(2, 9)
    problem = f"Simplify $\\frac{{{a * k}}}{{{b * k}}}$."
    solution = (
        f"Both the numerator and the denominator are divisible by ${k}$: "
        f"$\\frac{{{a * k}}}{{{b * k}}} = \\frac{{{a} \\cdot {k}}}{{{b} \\cdot {k}}} = "
        f"\\boxed{{\\frac{{{a}}}{{{b}}}}}$."
    )
    return problem, solution, f"\\frac{{{a}}}{{{b}}}", "Prealgebra", 2


def _angle(rng: random.Random) -> tuple[str, str, str, str, int]:
    a, b = rng.randint(20, 80), rng.randint(20, 80)
    c = 180 - a - b
    problem = (
        f"Two angles of a triangle measure ${a}^\\circ$ and ${b}^\\circ$. "
        "What is the measure of the third angle, in degrees?"
    )
    solution = (
        f"The angles of a triangle add up to $180^\\circ$, so the third angle is "
        f"$180 - {a} - {b} = \\boxed{{{c}}}$ degrees."
    )
    return problem, solution, str(c), "Geometry", 1


GENERATORS = [
    _linear_equation,
    _arithmetic,
    _gcd,
    _arrangements,
    _committee,
    _rectangle,
    _quadratic_roots,
    _fraction,
    _angle,
]


def make_problems(count: int, seed: int, split: str) -> list[dict]:
    rng = random.Random(seed)
    rows, seen = [], set()
    for attempt in range(count * 50):
        if len(rows) == count:
            break
        # Round-robin over subjects; generators with few distinct problems simply yield their turn when exhausted.
        generator = GENERATORS[attempt % len(GENERATORS)]
        problem, solution, answer, subject, level = generator(rng)
        if problem in seen:
            continue
        seen.add(problem)
        slug = subject.lower().replace(" & ", "_").replace(" ", "_")
        rows.append(
            {
                "problem": problem,
                "solution": solution,
                "answer": answer,
                "subject": subject,
                "level": level,
                "unique_id": f"{split}/{slug}/{len(rows)}.json",
            }
        )
    return rows


def write_jsonl(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def build_tokenizer(texts: list[str], vocab_size: int, digits_apart: bool = False):
    """A small byte-level BPE with the Qwen3 special tokens and ChatML template. ``digits_apart`` makes every digit
    its own token, as in Qwen3's tokenizer (the learnable task of make_smoke_task.py needs it)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    digits = pre_tokenizers.Digits(individual_digits=True)
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([digits, byte_level]) if digits_apart else byte_level
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[1:],
        model_max_length=4096,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_model(vocab_size: int, eos_token_id: int, pad_token_id: int, seed: int):
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    config = Qwen3Config(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=192,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        rope_theta=10000.0,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        bos_token_id=None,
    )
    model = Qwen3ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=eos_token_id, pad_token_id=pad_token_id)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="assets/smoke", help="folder to write data/, tokenizer and model into")
    parser.add_argument("--num_train", type=int, default=320)
    parser.add_argument("--num_test", type=int, default=24)
    parser.add_argument("--vocab_size", type=int, default=768)
    args = parser.parse_args()
    out = Path(args.output)

    train = make_problems(args.num_train, seed=1234, split="train")
    train_problems = {row["problem"] for row in train}
    candidates = make_problems(args.num_test * 3, seed=98765, split="test")
    test = [row for row in candidates if row["problem"] not in train_problems]
    test = test[: args.num_test]
    write_jsonl(train, out / "data" / "train.jsonl")
    write_jsonl(test, out / "data" / "test.jsonl")

    from mathsft.template import INSTRUCTION

    texts = [row["problem"] + INSTRUCTION + "\n" + row["solution"] for row in train]
    tokenizer = build_tokenizer(texts, args.vocab_size)
    model = build_model(len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id, seed=0)
    tokenizer.save_pretrained(out / "model")
    model.save_pretrained(out / "model")
    print(
        f"wrote {len(train)} train and {len(test)} test problems, a {len(tokenizer)}-token tokenizer and a "
        f"{sum(p.numel() for p in model.parameters()):,}-parameter model under {out}"
    )


if __name__ == "__main__":
    main()
