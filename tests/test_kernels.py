"""The optional training kernels (mathsft/kernels.py) compute what the default path computes.

On CPU the varlen attention runs its per-sequence SDPA reference, so these tests check the plumbing that the GPU
kernel shares (TRL's padding-free batches, the sequence boundaries, loading with SDPA then switching, GQA shapes)
against SDPA with the per-row block mask; the GPU kernel itself is compared by the bench over the same steps.
"""

from __future__ import annotations

import json

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl.data_utils import pack_dataset
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from conftest import SMOKE_DATA, SMOKE_MODEL, independent_masking
from mathsft import kernels
from mathsft.collators import PackedRowsCollator, uses_varlen_flash_attention
from mathsft.template import build_example


def _packed_rows(n: int, seq_length: int) -> list[dict]:
    tokenizer = AutoTokenizer.from_pretrained(SMOKE_MODEL)
    rows = [json.loads(x) for x in (SMOKE_DATA / "train.jsonl").read_text().splitlines()[:n]]
    examples = []
    for row in rows:
        ids, labels = independent_masking(tokenizer, build_example(row["problem"], row["solution"]))
        examples.append({"input_ids": ids, "labels": labels})
    packed = list(pack_dataset(Dataset.from_list(examples), seq_length=seq_length, strategy="bfd"))
    assert len(packed) < n  # several sequences really share a row
    return packed


def _load(attn_implementation: str) -> torch.nn.Module:
    model = AutoModelForCausalLM.from_pretrained(
        SMOKE_MODEL, dtype=torch.float32, attn_implementation=kernels.attention_to_load(attn_implementation)
    )
    kernels.use_attention(model, attn_implementation)
    return model


def _loss_and_grads(model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Token-mean loss over completion tokens (what the trainer optimises) and every parameter's gradient."""
    model.zero_grad()
    batch = dict(batch)
    labels = batch.pop("labels")
    logits = model(**batch, use_cache=False).logits.float()
    shift_logits, shift_labels = logits[:, :-1].reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1)
    loss = torch.nn.functional.cross_entropy(shift_logits, shift_labels, ignore_index=-100, reduction="sum")
    loss = loss / (shift_labels != -100).sum()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_varlen_on_padding_free_rows_matches_sdpa_on_packed_rows(monkeypatch):
    calls = []
    reference_kernel = kernels.torch_flash_varlen_attention

    def counting_kernel(*args, **kwargs):
        calls.append(kwargs["cu_seq_lens_q"].tolist())
        return reference_kernel(*args, **kwargs)

    monkeypatch.setattr(kernels, "torch_flash_varlen_attention", counting_kernel)
    rows = _packed_rows(8, seq_length=256)
    sdpa_batch = PackedRowsCollator(pad_token_id=0)(rows)  # what the recipes train with today
    varlen_batch = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(rows)  # TRL keeps it for varlen
    assert uses_varlen_flash_attention(kernels.PACKED_FLASH_VARLEN)  # so the training code keeps TRL's collator
    assert varlen_batch["input_ids"].shape[0] == 1 and "attention_mask" not in varlen_batch

    sdpa = _load("sdpa")
    varlen = _load(kernels.PACKED_FLASH_VARLEN)
    varlen.load_state_dict(sdpa.state_dict())
    assert varlen.config._attn_implementation == kernels.PACKED_FLASH_VARLEN
    loss_sdpa, grads_sdpa = _loss_and_grads(sdpa, sdpa_batch)
    loss_varlen, grads_varlen = _loss_and_grads(varlen, varlen_batch)

    sequences = sum(len(row["seq_lengths"]) for row in rows)
    assert len(calls) == varlen.config.num_hidden_layers  # every layer ran the varlen kernel ...
    assert all(len(bounds) == sequences + 1 for bounds in calls)  # ... over each packed sequence separately
    torch.testing.assert_close(loss_varlen, loss_sdpa, rtol=1e-5, atol=1e-6)
    assert grads_sdpa.keys() == grads_varlen.keys()
    for name in grads_sdpa:
        torch.testing.assert_close(grads_varlen[name], grads_sdpa[name], rtol=1e-4, atol=1e-6, msg=name)


def test_varlen_without_sequence_boundaries_is_refused():
    model = _load(kernels.PACKED_FLASH_VARLEN)
    rows = _packed_rows(4, seq_length=512)
    batch = PackedRowsCollator(pad_token_id=0)(rows)  # rows with position ids but no cu_seq_lens
    with pytest.raises(ValueError, match="padding-free"):
        model(**{k: v for k, v in batch.items() if k != "labels"})


def test_attention_loading_passes_other_implementations_through():
    assert kernels.attention_to_load(kernels.PACKED_FLASH_VARLEN) == "sdpa"
    assert kernels.attention_to_load("eager") == "eager" and kernels.attention_to_load(None) is None
    model = _load("eager")
    assert model.config._attn_implementation == "eager"


def test_compiled_decoder_layers_train_alike():
    rows = _packed_rows(6, seq_length=256)
    batch = PackedRowsCollator(pad_token_id=0)(rows)
    eager = _load("sdpa")
    compiled = _load("sdpa")
    compiled.load_state_dict(eager.state_dict())
    # The "eager" backend runs the traced graphs as they are: this checks the wiring and the graph capture quickly;
    # the bench measures inductor's kernels on the GPU.
    assert kernels.compile_decoder_layers(compiled, backend="eager") == compiled.config.num_hidden_layers
    assert all(layer._compiled_call_impl is not None for layer in kernels.decoder_layers(compiled))
    loss_eager, grads_eager = _loss_and_grads(eager, batch)
    loss_compiled, grads_compiled = _loss_and_grads(compiled, batch)
    torch.testing.assert_close(loss_compiled, loss_eager, rtol=1e-6, atol=1e-7)
    for name in grads_eager:
        torch.testing.assert_close(grads_compiled[name], grads_eager[name], rtol=1e-5, atol=1e-7, msg=name)
    torch._dynamo.reset()


def test_decoder_layers_are_found_through_peft():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(_load("sdpa"), LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    assert len(kernels.decoder_layers(model)) == model.config.num_hidden_layers
    with pytest.raises(ValueError, match="no decoder layers"):
        kernels.decoder_layers(torch.nn.Linear(2, 2))


def test_bf16_base_keeps_lora_adapters_in_fp32(tmp_path):
    """The bench's bf16base switch (``--dtype bfloat16`` on a LoRA recipe): the frozen base is bf16, while PEFT keeps
    the adapters, the only weights the optimizer updates, in fp32."""
    from mathsft import training
    from mathsft.recipes import parse_training_args

    args = parse_training_args(
        ["--config", "recipes/smoke/lora.yaml", "--dtype", "bfloat16", "--output_dir", str(tmp_path), "--report_to",
         "none", "--max_train_samples", "16", "--max_eval_samples", "8"]
    )  # fmt: skip
    trainer, _, _ = training.build_trainer(*args)
    frozen = {p.dtype for p in trainer.model.parameters() if not p.requires_grad}
    trained = {p.dtype for p in trainer.model.parameters() if p.requires_grad}
    assert frozen == {torch.bfloat16} and trained == {torch.float32}


def test_liger_availability_matches_the_installed_packages():
    try:
        import liger_kernel  # noqa: F401
    except ImportError:
        assert not kernels.liger_kernel_available()
    else:
        assert kernels.liger_kernel_available()
