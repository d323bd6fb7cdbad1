"""Model loading and batched generation for evaluation.

    model, tokenizer = load_model_and_tokenizer("runs/qwen3-0.6b-base-lora-base", adapter="runs/qwen3-0.6b-base-lora")
    requests = [GenerationRequest(key=(0, 0), prompt_ids=encode_prompt(tokenizer, text)), ...]
    for finished in generate(model, tokenizer, requests, SamplingSettings(max_new_tokens=1024)):
        ...  # list[(key, Completion)], yielded as soon as a batch (or a group of finished requests) is done

Two backends:

- ``hf``: ``model.generate`` on left-padded batches, prompts sorted longest first (an out-of-memory error shows up
  in the first batch, not after an hour). ``static`` is the same with a static KV cache, which transformers
  compiles automatically (fast per step, but slow to start and recompiled for every new batch shape).
- ``paged``: transformers' continuous batching (``generate_batch``'s manager): a paged KV cache, requests join and
  leave the running batch as they finish, so no step is spent on padding or finished rows. ``auto`` picks it on
  CUDA, where it runs with PyTorch's own flash varlen kernel (see ``torch_flash_varlen_attention``).

Both stop on ``<|im_end|>`` and ``<|endoftext|>`` (see ``mathsft.template``) and report ``finish_reason`` ``"stop"``
(a stop token was generated) or ``"length"`` (``max_new_tokens`` reached).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Generator, Hashable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from mathsft.environment import resolve_device
from mathsft.errors import UserError
from mathsft.paths import looks_like_local_path
from mathsft.template import END_OF_TEXT, END_OF_TURN, check_chat_template
from mathsft.tensor_files import is_unreadable_weights, weights_error

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "hf", "static", "paged")
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
# Batch sizes for the hf/static backends when --batch_size is not given. The paged backend sizes itself from free
# GPU memory, so its "batch" only caps how many sequences run at once.
DEFAULT_BATCH_SIZE = {"cuda": 128, "cpu": 8}
# The paged backend hands finished requests back in groups: at least this many, or whatever finished within
# FLUSH_SECONDS, so a crash loses little and the writer is not called per request.
PAGED_FLUSH_SIZE = 64
PAGED_FLUSH_SECONDS = 5.0


@dataclass
class SamplingSettings:
    """Decoding settings. ``temperature == 0`` means greedy decoding."""

    max_new_tokens: int = 1024
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 42
    # Benchmarks on random weights: never stop early, so every request generates exactly max_new_tokens.
    ignore_eos: bool = False

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass
class GenerationRequest:
    """One sequence to generate: ``key`` identifies it in the results, e.g. ``(problem_id, sample)``."""

    key: Hashable
    prompt_ids: list[int]


@dataclass
class Completion:
    text: str
    finish_reason: str  # "stop" or "length"
    num_tokens: int  # generated tokens, the stop token included


# ----------------------------------------------------------------------------------------------------------------
# Devices, dtypes and loading
# ----------------------------------------------------------------------------------------------------------------


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` is bf16 on GPUs that support it, fp16 on older GPUs, fp32 on CPU (bf16 matmuls are slow there)."""
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if dtype not in DTYPES:
        raise UserError(f"unknown dtype '{dtype}'; use auto or one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def resolve_backend(backend: str, device: torch.device) -> str:
    """``auto`` is the paged (continuous batching) backend on CUDA and plain ``generate`` elsewhere."""
    if backend not in BACKENDS:
        raise UserError(f"unknown backend '{backend}'; use one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "paged" if device.type == "cuda" else "hf"
    return backend


def _check_model_source(name_or_path: str, what: str) -> None:
    if looks_like_local_path(name_or_path) and not Path(name_or_path).expanduser().exists():
        raise UserError(f"{what} path not found: {name_or_path}")


def _load_error(name_or_path: str, what: str, err: Exception) -> UserError:
    if is_unreadable_weights(err):  # a pickle torch refuses to unpickle, a damaged safetensors file
        return weights_error(err, what, name_or_path)
    first_line = (str(err).strip().splitlines() or [""])[0][:200]
    offline_hint = "; offline? pass a local checkpoint folder, e.g. --model /local/path"
    hint = "" if looks_like_local_path(name_or_path) else offline_hint
    return UserError(f"could not load {what} '{name_or_path}' ({type(err).__name__}: {first_line}){hint}")


def load_tokenizer(model_name_or_path: str, adapter: str | None = None) -> Any:
    """The tokenizer saved with the adapter if there is one (training saves it there), else the model's."""
    from transformers import AutoTokenizer

    source = model_name_or_path
    if adapter is not None and (Path(adapter) / "tokenizer_config.json").is_file():
        source = adapter
    what = "adapter tokenizer" if source == adapter else "model"
    _check_model_source(source, what)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except Exception as err:  # hub errors, missing files, malformed configs
        raise _load_error(source, what, err) from err
    tokenizer.padding_side = "left"  # generation appends on the right, so pad on the left
    if tokenizer.pad_token is None:
        tokenizer.pad_token = END_OF_TEXT if END_OF_TEXT in tokenizer.get_vocab() else tokenizer.eos_token
    return tokenizer


def stop_token_ids(tokenizer: Any) -> list[int]:
    """Ids of ``<|im_end|>`` (end of turn) and ``<|endoftext|>`` (end of document), whichever the tokenizer has."""
    vocab = tokenizer.get_vocab()
    ids = [vocab[token] for token in (END_OF_TURN, END_OF_TEXT) if token in vocab]
    if not ids:
        raise UserError(f"the tokenizer has neither {END_OF_TURN} nor {END_OF_TEXT}; it does not use the chat format")
    return ids


def load_model_and_tokenizer(
    model_name_or_path: str,
    adapter: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    attn_implementation: str | None = None,
) -> tuple[Any, Any]:
    """Load a full checkpoint (hub id or folder), optionally with a LoRA adapter merged in, ready for generation.

    The base is loaded once in the target dtype and the adapter is merged in place (``merge_and_unload``), so there
    is never a second full copy of the weights.
    """
    from transformers import AutoModelForCausalLM, GenerationConfig

    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    _check_model_source(model_name_or_path, "model")
    if adapter is not None and not (Path(adapter) / "adapter_config.json").is_file():
        raise UserError(f"adapter folder {adapter} has no adapter_config.json (is it a saved PEFT adapter?)")
    tokenizer = load_tokenizer(model_name_or_path, adapter)
    check_chat_template(tokenizer)  # before the weights load and before the evaluation records its settings

    kwargs: dict[str, Any] = {"dtype": torch_dtype}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        model = AutoModelForCausalLM.from_pretrained(model_name_or_path, **kwargs)
    except Exception as err:
        raise _load_error(model_name_or_path, "model", err) from err
    model.to(torch_device)  # type: ignore[arg-type]  # transformers' stub of .to is narrower than nn.Module's
    if adapter is not None:
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
        except Exception as err:
            raise _load_error(adapter, "adapter", err) from err
    model.eval()
    # A clean generation config: sampling defaults saved with a checkpoint (top_k, temperature, ...) must not leak
    # into an evaluation whose settings are given on the command line.
    stops = stop_token_ids(tokenizer)
    model.generation_config = GenerationConfig(eos_token_id=stops, pad_token_id=tokenizer.pad_token_id)
    return model, tokenizer


def encode_prompt(tokenizer: Any, prompt: str) -> list[int]:
    """Token ids of an already rendered prompt (the chat template put in every special token it needs)."""
    return tokenizer(prompt, add_special_tokens=False)["input_ids"]


# ----------------------------------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------------------------------


def _generation_config(tokenizer: Any, settings: SamplingSettings, backend: str) -> Any:
    from transformers import GenerationConfig

    stops = stop_token_ids(tokenizer)
    kwargs: dict[str, Any] = {
        "max_new_tokens": settings.max_new_tokens,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": stops,
        "do_sample": not settings.greedy,
    }
    if not settings.greedy:
        # top_k off: only temperature and top_p shape the distribution.
        kwargs.update(temperature=settings.temperature, top_p=settings.top_p, top_k=0)
    if settings.ignore_eos:
        if backend == "paged":
            kwargs["eos_token_id"] = -1  # continuous batching: no stop token at all
        else:
            kwargs["min_new_tokens"] = settings.max_new_tokens
    if backend == "static":
        kwargs["cache_implementation"] = "static"
    return GenerationConfig(**kwargs)


def _finish(tokenizer: Any, tokens: Sequence[int], stops: set[int], ignore_eos: bool) -> Completion:
    """Cut at the first stop token, decode, and say why generation ended."""
    tokens = list(tokens)
    if not ignore_eos:
        for i, token in enumerate(tokens):
            if token in stops:
                text = tokenizer.decode(tokens[:i], skip_special_tokens=True)
                return Completion(text=text, finish_reason="stop", num_tokens=i + 1)
    return Completion(
        text=tokenizer.decode(tokens, skip_special_tokens=True), finish_reason="length", num_tokens=len(tokens)
    )


def _progress(total: int, enabled: bool) -> Any:
    return tqdm(total=total, desc="generating", unit="seq", disable=not enabled, dynamic_ncols=True)


def _update_progress(bar: Any, done: int, new_tokens: int, started: float) -> None:
    bar.update(done)
    elapsed = max(time.perf_counter() - started, 1e-9)
    bar.set_postfix_str(f"{new_tokens / elapsed:,.0f} tok/s", refresh=False)


def _generate_hf(
    model: Any,
    tokenizer: Any,
    requests: Sequence[GenerationRequest],
    settings: SamplingSettings,
    backend: str,
    batch_size: int,
    progress: bool,
) -> Generator[list[tuple[Hashable, Completion]], None, None]:
    generation_config = _generation_config(tokenizer, settings, backend)
    stops = set(stop_token_ids(tokenizer))
    pad_id = tokenizer.pad_token_id
    # Longest first: the largest batch comes first, so an out-of-memory error shows up at once. Stable sort keeps
    # the samples of one problem together.
    order = sorted(range(len(requests)), key=lambda i: -len(requests[i].prompt_ids))
    started = time.perf_counter()
    generated = 0
    with _progress(len(requests), progress) as bar:
        for start in range(0, len(order), batch_size):
            batch = [requests[i] for i in order[start : start + batch_size]]
            width = max(len(r.prompt_ids) for r in batch)
            input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, request in enumerate(batch):
                n = len(request.prompt_ids)
                input_ids[row, width - n :] = torch.tensor(request.prompt_ids, dtype=torch.long)
                attention_mask[row, width - n :] = 1
            with torch.inference_mode():
                output = model.generate(
                    input_ids=input_ids.to(model.device),
                    attention_mask=attention_mask.to(model.device),
                    generation_config=generation_config,
                )
            new_tokens = output[:, width:].tolist()
            results = []
            for request, tokens in zip(batch, new_tokens, strict=True):
                completion = _finish(tokenizer, tokens, stops, settings.ignore_eos)
                generated += completion.num_tokens
                results.append((request.key, completion))
            _update_progress(bar, len(batch), generated, started)
            yield results


# ----------------------------------------------------------------------------------------------------------------
# Paged attention without the flash-attn package
# ----------------------------------------------------------------------------------------------------------------

# Continuous batching packs every running sequence into one row. With SDPA it then needs a [tokens, cached tokens]
# mask over the whole batch, so attention cost grows with the square of the number of running sequences. A "flash"
# implementation gets per-sequence boundaries (cu_seq_lens) instead and needs no mask. The flash-attn package is
# often not installed, but PyTorch ships the same varlen kernel: register it under a name that contains "flash".
TORCH_FLASH_VARLEN = "flash_varlen_torch"


def _varlen_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_q: torch.Tensor, cu_k: torch.Tensor, scale: float | None
) -> torch.Tensor:
    """Per-sequence SDPA with flash's causal alignment (the last query sees the last key); for CPU and tests."""
    out = torch.zeros_like(q)
    bounds_q, bounds_k = cu_q.tolist(), cu_k.tolist()
    for i in range(len(bounds_q) - 1):
        q0, q1, k0, k1 = bounds_q[i], bounds_q[i + 1], bounds_k[i], bounds_k[i + 1]
        if q1 <= q0:
            continue  # padding sequence
        qi, ki, vi = (x.transpose(0, 1) for x in (q[q0:q1], k[k0:k1], v[k0:k1]))  # [heads, len, dim]
        offset = (k1 - k0) - (q1 - q0)
        mask = torch.ones(q1 - q0, k1 - k0, dtype=torch.bool, device=q.device).tril(diagonal=offset)
        oi = torch.nn.functional.scaled_dot_product_attention(
            qi, ki, vi, attn_mask=mask, scale=scale, enable_gqa=qi.shape[0] != ki.shape[0]
        )
        out[q0:q1] = oi.transpose(0, 1)
    return out


def torch_flash_varlen_attention(
    module: torch.nn.Module,
    query: torch.Tensor,  # [1, heads, tokens, dim]: all sequences of the batch packed together
    key: torch.Tensor,  # [1, kv_heads, cached tokens, dim], gathered from the paged cache
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    sliding_window: int | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Causal varlen attention for continuous batching, with PyTorch's built-in flash kernel (GQA native)."""
    if sliding_window is not None:
        raise NotImplementedError(f"{TORCH_FLASH_VARLEN} does not support sliding-window attention")
    q, k, v = (x[0].transpose(0, 1) for x in (query, key, value))  # [tokens, heads, dim]
    cu_q, cu_k = kwargs["cu_seq_lens_q"], kwargs["cu_seq_lens_k"]
    if q.is_cuda:
        out = torch.ops.aten._flash_attention_forward(
            q, k, v, cu_q, cu_k, kwargs["max_length_q"], kwargs["max_length_k"], 0.0, True, False, scale=scaling
        )[0]
    else:
        out = _varlen_reference(q, k, v, cu_q, cu_k, scaling)
    return out.unsqueeze(0), None  # [1, tokens, heads, dim]


def register_torch_flash_varlen() -> str:
    """Make ``TORCH_FLASH_VARLEN`` a valid attention implementation; returns its name."""
    from transformers import AttentionInterface

    AttentionInterface.register(TORCH_FLASH_VARLEN, torch_flash_varlen_attention)
    return TORCH_FLASH_VARLEN


def paged_attention_for(model: Any) -> str:
    """The attention implementation the paged backend runs with: flash if the model was loaded with flash (the
    flash-attn package), else PyTorch's varlen flash kernel on CUDA, else the model's own (SDPA on CPU)."""
    current = model.config._attn_implementation
    if "flash" in (current or ""):
        return current
    flash_capable = (
        model.device.type == "cuda"
        and model.dtype in (torch.bfloat16, torch.float16)  # the flash kernel has no fp32
        and torch.cuda.get_device_capability(model.device) >= (8, 0)  # Ampere or newer
    )
    if flash_capable:
        return register_torch_flash_varlen()
    return current


@contextlib.contextmanager
def _attention(model: Any, implementation: str) -> Iterator[None]:
    """Temporarily run ``model`` with another attention implementation (set on the config, which every layer
    reads at each forward; ``set_attn_implementation`` would try to import the flash-attn package)."""
    previous = model.config._attn_implementation
    model.config._attn_implementation = implementation
    try:
        yield
    finally:
        model.config._attn_implementation = previous


def _paged_config(
    requests: Sequence[GenerationRequest],
    settings: SamplingSettings,
    device: torch.device,
    batch_size: int | None,
) -> Any:
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    kwargs: dict[str, Any] = {"seed": settings.seed, "auto_switch_to_flash": False}
    if batch_size is not None:
        kwargs["max_requests_per_batch"] = batch_size
    if device.type != "cuda":
        # Off the GPU the cache would be sized to 60% of free RAM; size it to the workload instead.
        page_size = 256
        pages = sum(math.ceil((len(r.prompt_ids) + settings.max_new_tokens) / page_size) for r in requests)
        kwargs.update(page_size=page_size, num_blocks=pages + 2, max_batch_tokens=2048)
    return ContinuousBatchingConfig(**kwargs)


def _generate_paged(
    model: Any,
    tokenizer: Any,
    requests: Sequence[GenerationRequest],
    settings: SamplingSettings,
    batch_size: int | None,
    progress: bool,
    attn_implementation: str | None = None,
) -> Generator[list[tuple[Hashable, Completion]], None, None]:
    """Continuous batching through the manager that ``model.generate_batch`` wraps.

    ``generate_batch`` returns only when every request is done; driving its manager directly lets finished requests
    be graded and written while the rest are still generating (the manager runs in a background thread).
    """
    from transformers.generation.continuous_batching.utils import WorkloadHints

    generation_config = _generation_config(tokenizer, settings, "paged")
    stops = set(stop_token_ids(tokenizer))
    order = sorted(range(len(requests)), key=lambda i: -len(requests[i].prompt_ids))  # FIFO: longest first
    hints = WorkloadHints(
        max_prompt_length=max(len(r.prompt_ids) for r in requests),
        max_generated_length=settings.max_new_tokens,
        num_requests=len(requests),
    )
    implementation = attn_implementation or paged_attention_for(model)
    if implementation == TORCH_FLASH_VARLEN:
        register_torch_flash_varlen()
    with _attention(model, implementation):
        manager = model.init_continuous_batching(
            generation_config=generation_config,
            continuous_batching_config=_paged_config(requests, settings, model.device, batch_size),
            workload_hints=hints,
        )
        if model.device.type == "cuda":
            manager.warmup()  # captures CUDA graphs where the attention implementation allows them
        manager.start()
        finished = False
        started = time.perf_counter()
        generated = 0
        try:
            request_ids = manager.add_requests(
                inputs=[requests[i].prompt_ids for i in order], max_new_tokens=settings.max_new_tokens
            )
            key_of = {rid: requests[i].key for rid, i in zip(request_ids, order, strict=True)}
            remaining = len(request_ids)
            pending: list[tuple[Hashable, Completion]] = []
            last_flush = time.perf_counter()
            with _progress(len(requests), progress) as bar:
                while remaining:
                    output = manager.get_result(timeout=0.5)
                    if output is not None and output.is_finished():
                        if output.error is not None:
                            raise RuntimeError(f"generation failed for request {output.request_id}: {output.error}")
                        completion = _finish(tokenizer, output.generated_tokens, stops, settings.ignore_eos)
                        pending.append((key_of[output.request_id], completion))
                        generated += completion.num_tokens
                        remaining -= 1
                        _update_progress(bar, 1, generated, started)
                    elif output is None and not manager.is_running():
                        raise RuntimeError("the continuous batching thread stopped unexpectedly (see the log above)")
                    now = time.perf_counter()
                    flush = len(pending) >= PAGED_FLUSH_SIZE or now - last_flush >= PAGED_FLUSH_SECONDS
                    if pending and (flush or not remaining):
                        yield pending
                        pending, last_flush = [], now
            finished = True
        finally:
            # On an error or Ctrl-C, stop at once instead of finishing every queued request.
            manager.stop(block=True, timeout=30, hard_stop=not finished)
            manager.destroy()


def generate(
    model: Any,
    tokenizer: Any,
    requests: Sequence[GenerationRequest],
    settings: SamplingSettings,
    backend: str = "auto",
    batch_size: int | None = None,
    progress: bool = True,
    attn_implementation: str | None = None,
) -> Generator[list[tuple[Hashable, Completion]], None, None]:
    """Generate one completion per request; yields ``[(key, Completion), ...]`` groups as they finish.

    The order of results is not the order of ``requests``: use the keys. Seeded: with the ``hf``/``static``
    backends a rerun of the same requests gives the same completions (on the same hardware); the paged backend
    schedules requests in a background thread, so sampled (not greedy) completions may differ between runs.
    ``attn_implementation`` picks the paged backend's attention kernel.
    """
    if not requests:
        return
    backend = resolve_backend(backend, model.device)
    if settings.max_new_tokens < 1:
        raise UserError(f"max_new_tokens must be at least 1, got {settings.max_new_tokens}")
    from transformers import set_seed

    set_seed(settings.seed)
    if backend == "paged":
        yield from _generate_paged(model, tokenizer, requests, settings, batch_size, progress, attn_implementation)
    else:
        size = batch_size or DEFAULT_BATCH_SIZE["cuda" if model.device.type == "cuda" else "cpu"]
        yield from _generate_hf(model, tokenizer, requests, settings, backend, size, progress)
