"""What the evaluation precision keeps of a fine-tuning update.

Training keeps fp32 master weights; ``run_eval.py`` loads the model in bf16 on a GPU (``dtype: auto``). An update
``w_ft - w_base`` smaller than half a bf16 step of its weight rounds away in that cast. For each tensor,

    survival = ||cast(w_ft) - cast(w_base)|| / ||w_ft - w_base||      (Frobenius norms)

summed over the tensors of a kind (attention, mlp, embedding, norm, lm_head, other) and over all of them. About 1: the
update survives; about 0: it rounds away. The Qwen3 checkpoints are stored in bf16, so ``cast(w_base) == w_base`` and a
sub-resolution update gives exactly 0. A base that is not representable in the dtype (the fp32 smoke models) can give
far more than 1 for tiny updates: a few weights then cross a rounding boundary and jump a whole bf16 step, which is
noise added by the cast rather than update kept. Two more figures tell the cases apart: ``base_exact`` (every base
weight is representable in the dtype) and ``rounding_error``, ``||(cast(w_ft) - cast(w_base)) - (w_ft - w_base)||``
over ``||w_ft - w_base||`` (overall): about 0 when the update survives, about 1 when it rounds away, above 1 when the
cast adds more noise than there was update.

For LoRA, ``w_ft`` is the merged weight ``w_base + scale * B @ A`` (and the trainable token rows). Under FSDP the
parameters are shards and the measurement is skipped (``measure_update_survival`` returns None).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

logger = logging.getLogger(__name__)

EVAL_DTYPE = torch.bfloat16  # run_eval.py's dtype on a GPU with bf16 support (dtype auto)
_CHUNK_ELEMENTS = 1 << 24  # rows at a time, so the embedding's temporaries stay small on the device
# The first match names the kind; the order matters (a norm inside an attention block is a norm).
_KINDS = (
    ("norm", ("norm",)),
    ("embedding", ("embed_tokens", "embed", "wte")),
    ("lm_head", ("lm_head",)),
    ("attention", ("self_attn", "attention", "attn")),
    ("mlp", ("mlp", "feed_forward")),
)


def tensor_kind(name: str) -> str:
    """attention, mlp, embedding, norm, lm_head or other, from a parameter's name."""
    lowered = name.lower()
    return next((kind for kind, marks in _KINDS if any(mark in lowered for mark in marks)), "other")


@dataclass
class UpdateSurvival:
    """Accumulates, per kind, the squared norms of the true update and of what survives the cast to ``dtype``."""

    dtype: torch.dtype = EVAL_DTYPE
    update_sq: dict[str, float] = field(default_factory=dict)
    kept_sq: dict[str, float] = field(default_factory=dict)
    error_sq: float = 0.0  # squared norm of (what the cast keeps - the update), over all tensors
    base_exact: bool = True  # every base weight seen is representable in ``dtype``

    def add(self, name: str, base: torch.Tensor, update: torch.Tensor) -> None:
        """One tensor: ``base`` the weight before training, ``update`` what training added (same shape)."""
        kind = tensor_kind(name)
        update_sq = kept_sq = 0.0
        for base_rows, update_rows in zip(_row_chunks(base), _row_chunks(update), strict=True):
            base32, update32 = base_rows.float(), update_rows.float()
            base_cast = base32.to(self.dtype).float()
            kept = (base32 + update32).to(self.dtype).float() - base_cast
            update_sq += float(update32.double().square().sum())
            kept_sq += float(kept.double().square().sum())
            self.error_sq += float((kept.double() - update32.double()).square().sum())
            self.base_exact = self.base_exact and bool(torch.equal(base_cast, base32))
        if update_sq > 0.0:
            self.update_sq[kind] = self.update_sq.get(kind, 0.0) + update_sq
            self.kept_sq[kind] = self.kept_sq.get(kind, 0.0) + kept_sq

    def result(self) -> dict[str, Any]:
        """``{"dtype", "overall", "by_kind", "base_exact", "rounding_error"}`` (run_summary.json's
        ``eval_precision``); kinds with no update are left out, ``overall`` is None when nothing changed."""
        by_kind = {kind: _ratio(self.kept_sq[kind], total) for kind, total in sorted(self.update_sq.items())}
        total = sum(self.update_sq.values())
        return {
            "dtype": str(self.dtype).removeprefix("torch."),
            "overall": _ratio(sum(self.kept_sq.values()), total) if total > 0 else None,
            "by_kind": by_kind,
            "base_exact": self.base_exact,
            "rounding_error": _ratio(self.error_sq, total) if total > 0 else None,
        }


def _ratio(kept_sq: float, update_sq: float) -> float:
    return round((kept_sq / update_sq) ** 0.5, 6)


def _row_chunks(tensor: torch.Tensor) -> Iterator[torch.Tensor]:
    flat = tensor.detach().reshape(tensor.shape[0], -1) if tensor.ndim > 1 else tensor.detach().reshape(-1, 1)
    rows = max(1, _CHUNK_ELEMENTS // max(1, flat.shape[1]))
    yield from flat.split(rows)


def measure_full(model: nn.Module, base_weights: Path | str, dtype: torch.dtype = EVAL_DTYPE) -> dict[str, Any]:
    """Full fine-tuning: the trained parameters against the base checkpoint, read tensor by tensor from its
    safetensors files (no second model in memory). Parameters the checkpoint lacks are skipped with a log line."""
    from safetensors import safe_open

    survival = UpdateSurvival(dtype)
    params = dict(model.named_parameters())  # a tied LM head appears once, as the embedding
    missing = set(params)
    for path in safetensors_files(base_weights):
        with safe_open(str(path), framework="pt") as weights:
            for key in weights.keys():  # noqa: SIM118  # safe_open is not a mapping
                param = params.get(key)
                if param is None or key not in missing:
                    continue
                missing.discard(key)
                base = weights.get_tensor(key).to(param.device)
                survival.add(key, base, param.detach().float() - base.float())
    if missing:
        logger.warning("eval precision: %d parameters not found in the base checkpoint, left out (e.g. %s)",
                       len(missing), sorted(missing)[0])  # fmt: skip
    return survival.result()


def measure_peft(model: nn.Module, dtype: torch.dtype = EVAL_DTYPE) -> dict[str, Any]:
    """LoRA: each adapted layer's merged update ``scale * B @ A`` on its frozen base weight, and each trainable-token
    row against the base row it replaces."""
    from peft.tuners.lora import LoraLayer
    from peft.utils.other import TrainableTokensWrapper

    survival = UpdateSurvival(dtype)
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer):
            base = cast(torch.Tensor, module.get_base_layer().weight)
            layer = cast(Any, module)  # each LoRA layer type (Linear, Embedding, ...) defines get_delta_weight
            for adapter in module.active_adapters:
                if adapter in module.lora_A:
                    survival.add(name, base, layer.get_delta_weight(adapter).detach())
        elif isinstance(module, TrainableTokensWrapper):
            adapter_layer = module.token_adapter
            if adapter_layer.tied_adapter is not None:
                continue  # the LM head tied to the embedding: the same rows, counted once
            base = adapter_layer.base_layer.weight
            for adapter in adapter_layer.active_adapters:
                rows = torch.tensor(adapter_layer.token_indices[adapter], device=base.device)
                base_rows = base.detach().index_select(0, rows)
                new_rows = adapter_layer.trainable_tokens_delta[adapter].detach()
                survival.add(name, base_rows, new_rows.float() - base_rows.float())
    return survival.result()


def safetensors_files(source: Path | str) -> list[Path]:
    """The base model's safetensors files: a local folder's, or the hub cache's (the run has just loaded them)."""
    folder = Path(source).expanduser()
    if not folder.is_dir():
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(str(source), allow_patterns=["*.safetensors"], local_files_only=True))
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no safetensors weights in {folder}")
    return files


def is_sharded(model: nn.Module) -> bool:
    """Whether any parameter is an FSDP shard (a DTensor or a flattened FSDP1 parameter)."""
    if not torch.distributed.is_available():
        return False
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) or type(p).__name__ == "FlatParameter" for p in model.parameters())


def measure_update_survival(model: nn.Module, base_weights: str | None, peft: bool) -> dict[str, Any] | None:
    """``eval_precision`` of a trained model, or None (with a log line saying why) when it cannot be measured."""
    if is_sharded(model):
        logger.info("eval precision: skipped under FSDP (the parameters are shards)")
        return None
    try:
        with torch.no_grad():
            return measure_peft(model) if peft else measure_full(model, base_weights or "")
    except (OSError, ValueError, RuntimeError) as err:  # base weights not found offline, an unusual layout
        logger.warning("eval precision: not measured (%s: %s)", type(err).__name__, str(err).splitlines()[0][:200])
        return None
