"""The fast path learns the same thing: one step on packed rows gives the loss and gradients of plain padding."""

from __future__ import annotations

import json

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl.data_utils import pack_dataset
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from conftest import SMOKE_DATA, SMOKE_MODEL, independent_masking
from mathsft.collators import PackedRowsCollator
from mathsft.template import build_example


def _tokenized_examples(n: int) -> list[dict]:
    tokenizer = AutoTokenizer.from_pretrained(SMOKE_MODEL)
    rows = [json.loads(x) for x in (SMOKE_DATA / "train.jsonl").read_text().splitlines()[:n]]
    out = []
    for row in rows:
        ids, labels = independent_masking(tokenizer, build_example(row["problem"], row["solution"]))
        out.append({"input_ids": ids, "labels": labels})
    return out


def _loss_and_grads(model, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Token-summed loss over completion tokens, normalised by their count (what the trainer optimises)."""
    model.zero_grad()
    labels = batch.pop("labels")
    logits = model(**batch, use_cache=False).logits.float()
    shift_logits, shift_labels = logits[:, :-1].reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1)
    loss = torch.nn.functional.cross_entropy(shift_logits, shift_labels, ignore_index=-100, reduction="sum")
    loss = loss / (shift_labels != -100).sum()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_packed_rows_match_padded_batch():
    torch.manual_seed(0)
    examples = _tokenized_examples(6)
    model = AutoModelForCausalLM.from_pretrained(SMOKE_MODEL, dtype=torch.float32, attn_implementation="sdpa")

    padded = DataCollatorForLanguageModeling(pad_token_id=0)(examples)
    packed_rows = pack_dataset(Dataset.from_list(examples), seq_length=256, strategy="bfd")
    assert len(packed_rows) < len(examples)  # several examples really share a row
    assert sum(len(s) for s in packed_rows["seq_lengths"]) == len(examples)
    packed = PackedRowsCollator(pad_token_id=0)(list(packed_rows))
    assert "attention_mask" not in packed

    loss_padded, grads_padded = _loss_and_grads(model, dict(padded))
    loss_packed, grads_packed = _loss_and_grads(model, dict(packed))
    torch.testing.assert_close(loss_packed, loss_padded, rtol=1e-5, atol=1e-6)
    assert grads_padded.keys() == grads_packed.keys()
    for name in grads_padded:
        torch.testing.assert_close(grads_packed[name], grads_padded[name], rtol=1e-4, atol=1e-6, msg=name)


def test_rows_without_position_restart_would_leak_across_sequences():
    """Guard against a silent regression: if sequences could attend to each other, the loss would differ."""
    examples = _tokenized_examples(4)
    model = AutoModelForCausalLM.from_pretrained(SMOKE_MODEL, dtype=torch.float32, attn_implementation="sdpa")
    packed_rows = pack_dataset(Dataset.from_list(examples), seq_length=512, strategy="bfd")
    good = PackedRowsCollator(pad_token_id=0)(list(packed_rows))
    leaky = dict(good)
    leaky["position_ids"] = torch.arange(good["input_ids"].size(1)).expand_as(good["input_ids"])
    loss_good, _ = _loss_and_grads(model, dict(good))
    loss_leaky, _ = _loss_and_grads(model, leaky)
    assert not torch.allclose(loss_good, loss_leaky)
