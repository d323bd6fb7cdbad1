"""The chat template is defined once, and TRL's completion-only masking is exact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from conftest import REAL_DATA, REAL_TOKENIZER, REPO, SMOKE_DATA, SMOKE_MODEL, independent_masking, require_real_data
from mathsft.template import (
    END_OF_TURN,
    INSTRUCTION,
    build_example,
    build_prompt_messages,
    render_generation_prompt,
)


def test_user_turn_is_problem_plus_instruction():
    messages = build_prompt_messages("What is $1+1$?")
    assert messages == [
        {
            "role": "user",
            "content": "What is $1+1$?\nPlease reason step by step, and put your final answer within \\boxed{}.",
        }
    ]
    with_system = build_prompt_messages("x", system_prompt="Be brief.")
    assert with_system[0] == {"role": "system", "content": "Be brief."}
    example = build_example("x", "y")
    assert example["completion"] == [{"role": "assistant", "content": "y"}]
    assert example["chat_template_kwargs"] == {"enable_thinking": False}


def test_instruction_text_has_a_single_definition():
    """No second copy of the instruction anywhere in the code: training and evaluation import it."""
    needle = "Please reason step by step"
    holders = [
        path.relative_to(REPO).as_posix()
        for path in REPO.rglob("*.py")
        if ".git" not in path.parts and "tests" not in path.parts and needle in path.read_text(errors="ignore")
    ]
    assert holders == ["mathsft/template.py"]
    assert needle in INSTRUCTION


def _trainer_tokenized(tokenizer, rows: list[dict], tmp_path: Path):
    """Tokenize through the project's own path: to_conversations + MathSFTTrainer's dataset preparation."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    from mathsft.configs import DataArguments, MathSFTConfig
    from mathsft.training import EXAMPLE_ID, MathSFTTrainer, to_conversations

    data_args = DataArguments()
    conversations = to_conversations(Dataset.from_list(rows), data_args, [str(i) for i in range(len(rows))])
    args = MathSFTConfig(
        output_dir=str(tmp_path),
        max_length=None,  # nothing truncated: every row is compared whole
        report_to="none",
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,
        dataset_num_proc=2 if len(rows) > 1000 else None,
    )
    model = AutoModelForCausalLM.from_pretrained(SMOKE_MODEL, dtype=torch.float32)
    trainer = MathSFTTrainer(
        model=model, args=args, train_dataset=conversations.remove_columns(EXAMPLE_ID), processing_class=tokenizer
    )
    return conversations, trainer.train_dataset


def _check_all(tokenizer, rows, tmp_path):
    conversations, tokenized = _trainer_tokenized(tokenizer, rows, tmp_path)
    end_of_turn = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    assert len(tokenized) == len(rows)
    for example, got_ids, got_labels in zip(conversations, tokenized["input_ids"], tokenized["labels"], strict=True):
        want_ids, want_labels = independent_masking(tokenizer, example)
        assert got_ids == want_ids
        assert got_labels == want_labels
        # The model must learn to end its turn: <|im_end|> is a target (followed only by the template's newline).
        assert end_of_turn in got_labels[-2:]
    return tokenized


def test_masking_exact_on_sample_data(tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(SMOKE_MODEL)
    rows = [json.loads(line) for line in (SMOKE_DATA / "train.jsonl").read_text().splitlines()]
    _check_all(tokenizer, rows, tmp_path)


def test_generation_prompt_is_the_training_prompt():
    tokenizer = AutoTokenizer.from_pretrained(SMOKE_MODEL)
    example = build_example("What is $2+3$?", "It is $\\boxed{5}$.")
    full = tokenizer.apply_chat_template(
        example["prompt"] + example["completion"], tokenize=False, enable_thinking=False
    )
    prompt = render_generation_prompt(tokenizer, "What is $2+3$?")
    assert full.startswith(prompt)
    assert full[len(prompt) :] == "It is $\\boxed{5}$.<|im_end|>\n"


@pytest.mark.slow
def test_masking_exact_on_all_real_math_train_rows(tmp_path):
    """All 12,000 MATH train rows with the real Qwen3 tokenizer: input_ids and labels equal the plain computation."""
    require_real_data()
    tokenizer = AutoTokenizer.from_pretrained(REAL_TOKENIZER)
    assert tokenizer.eos_token == "<|endoftext|>"
    rows = [json.loads(line) for line in (REAL_DATA / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 12000
    tokenized = _check_all(tokenizer, rows, tmp_path)
    lengths = [len(ids) for ids in tokenized["input_ids"]]
    # The facts the recipes rely on: max_length 1024 keeps ~98%, 512 only ~85%.
    assert 0.97 < sum(n <= 1024 for n in lengths) / len(lengths) < 0.99
    assert 0.83 < sum(n <= 512 for n in lengths) / len(lengths) < 0.87


@pytest.mark.parametrize("problem", ["", "x" * 5])
def test_render_generation_prompt_ends_with_empty_think_block(problem):
    tokenizer = AutoTokenizer.from_pretrained(SMOKE_MODEL)
    assert render_generation_prompt(tokenizer, problem).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
