"""Packed rows stay apart only without a KV cache: through the trainer exactly as ``training.build_trainer`` builds it,
a packed batch gives the loss of the same sequences padded one per row, and the same batch with ``use_cache=True``
forced into the model's forward does not (with a cache, transformers builds a plain causal mask over the whole row).
If a code path ever let the cache on (TRL's ``compute_loss`` passes ``use_cache=False`` today, and the Trainer sets
``model.config.use_cache = False``), the first comparison fails."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from mathsft.callbacks import NUM_TOKENS_KEY
from mathsft.collators import PackedRowsCollator
from mathsft.recipes import parse_training_args
from mathsft.training import build_trainer

RTOL, ATOL = 1e-5, 1e-6  # fp32 on the CPU: packed and padded agree to rounding


@pytest.fixture(scope="module")
def packed_trainer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The smoke AdamW recipe with the fast recipes' packing, on 32 examples."""
    output_dir = tmp_path_factory.mktemp("packed")
    args = parse_training_args([
        "--config", "recipes/smoke/adamw.yaml", "--output_dir", str(output_dir),
        "--packing", "true", "--packing_strategy", "bfd", "--per_device_train_batch_size", "4",
        "--max_train_samples", "32", "--max_eval_samples", "8", "--report_to", "none",
    ])  # fmt: skip
    trainer, _, _ = build_trainer(*args)
    return trainer


def _sequences(batch: dict[str, torch.Tensor]) -> list[dict[str, list[int]]]:
    """The packed rows cut back into their sequences (a sequence starts where position_ids restart at 0)."""
    sequences = []
    for ids, labels, positions in zip(batch["input_ids"], batch["labels"], batch["position_ids"], strict=True):
        starts = [*torch.nonzero(positions == 0).flatten().tolist(), len(ids)]
        for start, end in zip(starts, starts[1:], strict=False):
            if (labels[start:end] != -100).any():  # a right-padding token is a "sequence" of its own, without labels
                sequences.append({"input_ids": ids[start:end].tolist(), "labels": labels[start:end].tolist()})
    return sequences


def test_packed_rows_need_use_cache_false(packed_trainer: Any) -> None:
    trainer = packed_trainer
    model = trainer.model
    assert isinstance(trainer.data_collator.collator, PackedRowsCollator)  # the fast path, as in the real recipes
    packed = next(iter(trainer.get_train_dataloader()))
    packed.pop(NUM_TOKENS_KEY, None)
    sequences = _sequences(packed)
    assert "attention_mask" not in packed and len(sequences) > len(packed["input_ids"])  # rows really are shared
    padded = DataCollatorForLanguageModeling(pad_token_id=trainer.processing_class.pad_token_id)(sequences)

    with torch.no_grad():
        loss_packed = trainer.compute_loss(model, dict(packed))
        loss_padded = trainer.compute_loss(model, dict(padded))
        torch.testing.assert_close(loss_packed, loss_padded, rtol=RTOL, atol=ATOL)

        def force_cache(module: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict]:
            return args, kwargs | {"use_cache": True}

        decoder = model.get_decoder()  # TRL's loss calls the decoder itself, then a fused LM head
        hook = decoder.register_forward_pre_hook(force_cache, with_kwargs=True)
        try:
            loss_with_cache = trainer.compute_loss(model, dict(packed))
        finally:
            hook.remove()
    # The tiny random model barely uses its context, so the merged sequences move the mean loss by ~1e-4 relative:
    # still far outside the tolerance that the packed loss meets.
    assert abs(loss_with_cache - loss_padded) > 10 * (RTOL * abs(loss_padded) + ATOL), (loss_with_cache, loss_padded)

