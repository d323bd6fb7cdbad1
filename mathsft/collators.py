"""Row packing that keeps sequences separate, for any attention implementation.

TRL's BFD packing puts several whole sequences into each row of at most ``max_length`` tokens. Its padding-free
collator then flattens the whole batch into one row, which only FlashAttention's varlen kernels handle efficiently:
with SDPA the mask becomes one ``(B*L)^2`` block-diagonal matrix and attention cost explodes. Here the rows stay
rows: position ids restart at every sequence and no attention mask is passed, so transformers derives a per-row
block-diagonal causal mask (``find_packed_sequence_indices``) and a token never attends across sequences.

This depends on ``use_cache=False``: transformers looks for packed sequences only when there is no attention mask
**and no KV cache** (``masking_utils._preprocess_mask_arguments``). With a cache (``use_cache=True``, or
``model.config.use_cache`` left on and no ``use_cache`` argument), it builds one plain causal mask over the whole
row, and every example attends to the ones packed before it, silently. Today TRL's ``SFTTrainer.compute_loss``
passes ``use_cache=False`` for training and validation, and the Trainer sets ``model.config.use_cache`` from
``TrainingArguments.use_cache`` (False). Any other forward over packed rows (a custom loss, an evaluation of packed
rows outside the trainer) must pass ``use_cache=False`` itself; ``tests/test_packed_use_cache.py`` fails if the
trainer path lets a cache in.
"""

from __future__ import annotations

from typing import Any

from trl.trainer.sft_trainer import DataCollatorForLanguageModeling


class PackedRowsCollator:
    """Collate BFD-packed rows (``input_ids``, ``labels``, ``seq_lengths``) into padded rows with per-sequence
    position ids and no attention mask."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None) -> None:
        self.inner = DataCollatorForLanguageModeling(
            pad_token_id=pad_token_id,
            padding_free=False,
            return_position_ids=True,
            pad_to_multiple_of=pad_to_multiple_of,
        )

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.inner(examples)
        # An attention mask would switch off packed-sequence detection; right padding gets position 0, so each pad
        # token is a sequence of its own and, with label -100, contributes nothing.
        batch.pop("attention_mask", None)
        # A sequence's first token is never a target (it has no context of its own), exactly as without packing.
        batch["labels"][batch["position_ids"] == 0] = -100
        return batch


def uses_varlen_flash_attention(attn_implementation: str | None) -> bool:
    """FlashAttention consumes TRL's flattened padding-free batches natively; everything else needs packed rows."""
    return attn_implementation is not None and "flash" in attn_implementation
