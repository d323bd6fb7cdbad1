"""Optional speed-ups of the training path, all off by default: PyTorch's varlen flash kernel for packed rows,
Liger kernels, and ``torch.compile`` of the decoder layers.

None of them is switched on by a recipe: ``bench/train_throughput.py`` measures each one (speed, memory, and the
loss over the same steps against the plain recipe) before a recipe may use it; see ``docs/benchmarks.md``.

Varlen attention for packed rows. With ``attn_implementation: packed_flash_varlen_torch`` the training code keeps
TRL's padding-free collator (``mathsft.collators.uses_varlen_flash_attention``: the name contains "flash"): each
micro-batch becomes one row of concatenated sequences, with ``position_ids`` and the sequence boundaries
``cu_seq_lens_q/k`` computed on the CPU by the collator. transformers 5 builds no mask for an attention function that
has no mask function (``masking_utils._preprocess_mask_arguments`` exits early) and passes the collator's keyword
arguments through to it, so ``packed_flash_varlen_attention`` runs PyTorch's own flash varlen kernel (the one
generation uses, ``mathsft.generation.torch_flash_varlen_attention``; it has autograd) within each sequence only,
without the dense block-diagonal mask that SDPA needs. On the CPU it runs the per-sequence SDPA reference instead.

transformers treats every implementation name that contains "flash" as a flash-attn package or a Hub kernel and tries
to import it in ``from_pretrained``, so the model is loaded with SDPA and switched afterwards:

    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation=attention_to_load(name), ...)
    use_attention(model, name)
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch

from mathsft.generation import torch_flash_varlen_attention

PACKED_FLASH_VARLEN = "packed_flash_varlen_torch"


def packed_flash_varlen_attention(
    module: torch.nn.Module,
    query: torch.Tensor,  # [1, heads, tokens, dim]: the micro-batch's sequences concatenated
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    sliding_window: int | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Causal attention within each packed sequence, for training on TRL's padding-free batches."""
    if "cu_seq_lens_q" not in kwargs:
        raise ValueError(f"{PACKED_FLASH_VARLEN} needs padding-free packed batches (packing: true, bfd)")
    if dropout:
        raise NotImplementedError(f"{PACKED_FLASH_VARLEN} has no attention dropout")
    if query.is_cuda:
        # Under autocast SDPA computes in bf16/fp16; the flash op is not on autocast's list, so cast as SDPA would
        # (q and k come out of fp32 RMSNorm weights in fp32, v out of the bf16 projection).
        if torch.is_autocast_enabled("cuda"):
            dtype = torch.get_autocast_dtype("cuda")
            query, key, value = query.to(dtype), key.to(dtype), value.to(dtype)
        if query.dtype not in (torch.bfloat16, torch.float16):
            raise ValueError(f"{PACKED_FLASH_VARLEN} needs bf16 or fp16 (bf16: true, or bf16 weights)")
    return torch_flash_varlen_attention(module, query, key, value, None, 0.0, scaling, sliding_window, **kwargs)


# Attention implementations that are registered here rather than shipped by transformers.
PROJECT_ATTENTION: dict[str, Any] = {PACKED_FLASH_VARLEN: packed_flash_varlen_attention}


def attention_to_load(attn_implementation: str | None) -> str | None:
    """The implementation to pass to ``from_pretrained``: SDPA for the project's own kernels (switched on after
    loading by ``use_attention``), the requested one otherwise."""
    return "sdpa" if attn_implementation in PROJECT_ATTENTION else attn_implementation


def use_attention(model: torch.nn.Module, attn_implementation: str | None) -> None:
    """Run a loaded model with one of the project's attention implementations (no-op for any other name)."""
    if attn_implementation not in PROJECT_ATTENTION:
        return
    from transformers import AttentionInterface

    AttentionInterface.register(attn_implementation, PROJECT_ATTENTION[attn_implementation])
    # Every layer reads the config at each forward; set_attn_implementation would import the flash-attn package.
    model.config._attn_implementation = attn_implementation  # type: ignore[union-attr]


def liger_kernel_available() -> bool:
    """Liger kernels need the ``liger-kernel`` package (and Triton, hence a GPU) to be installed."""
    return importlib.util.find_spec("liger_kernel") is not None


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The transformer blocks of a causal LM, through a PEFT wrapper if there is one."""
    base: Any = model
    if hasattr(base, "get_base_model"):
        base = base.get_base_model()
    layers = getattr(getattr(base, "model", None), "layers", None)
    if not isinstance(layers, torch.nn.ModuleList) or len(layers) == 0:
        raise ValueError(f"{type(base).__name__} has no decoder layers at .model.layers")
    return layers


def compile_decoder_layers(model: torch.nn.Module, backend: str = "inductor", dynamic: bool | None = None) -> int:
    """``torch.compile`` each decoder layer in place (regional compilation): the layers share one compiled graph,
    so compiling costs one layer's time, and the embedding, the LM head and the loss stay eager. Returns the count."""
    layers = decoder_layers(model)
    for layer in layers:
        layer.compile(backend=backend, dynamic=dynamic)
    return len(layers)
