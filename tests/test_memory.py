"""Static memory breakdown (mathsft.memory): hand-computed values, and the bytes torch actually allocates."""

from __future__ import annotations

import pytest

from conftest import REAL_TOKENIZER
from mathsft.memory import GB, StaticMemory, dtype_bytes, state_buffers, static_memory, static_memory_from_summary
from summary_factory import hyperparameters

QWEN3_06B_PARAMS = 596_049_920  # Qwen3-0.6B-Base, tied embeddings (checked by test_qwen3_06b_parameter_count)

# A fixed two-layer Qwen3 (the smoke model's shape when this test was written): hidden 64, 4 query / 2 key-value
# heads of dim 16, MLP 192, vocabulary 768, tied embeddings.
TINY_QWEN3 = {
    "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
    "intermediate_size": 192, "vocab_size": 768, "tie_word_embeddings": True, "max_position_embeddings": 128,
}
# By hand: embeddings 768*64 = 49,152; per layer q 64*64 + k 32*64 + v 32*64 + o 64*64 = 12,288, q/k norms 2*16,
# MLP 3 * 192*64 = 36,864, two layer norms 2*64 -> 49,312; two layers 98,624; final norm 64.
TINY_PARAMS = 49_152 + 2 * 49_312 + 64  # 147,840
# LoRA r=8 on all seven projections: A (r x in) + B (out x r) per projection:
# q 8*64+64*8 = 1,024; k 8*64+32*8 = 768; v 768; o 1,024; gate 8*64+192*8 = 2,048; up 2,048; down 8*192+64*8 = 2,048.
TINY_LORA_ADAPTERS = 2 * (1_024 + 768 + 768 + 1_024 + 3 * 2_048)  # 19,456


def test_buffers_come_from_the_registry():
    assert [state_buffers(m, {"sgd_momentum": 0.9}) for m in ("adamw", "sgd", "lora")] == [2, 1, 2]
    assert state_buffers("sgd", {"sgd_momentum": 0.0}) == 0  # torch.optim.SGD keeps no buffer without momentum
    with pytest.raises(ValueError, match="unknown method 'lion'"):
        state_buffers("lion", {})


def test_qwen3_06b_fp32_adamw_matches_the_issue():
    memory = static_memory(QWEN3_06B_PARAMS, QWEN3_06B_PARAMS, 4, state_buffers("adamw", {}))
    assert memory.weights_bytes == 2_384_199_680
    assert memory.gradients_bytes == 2_384_199_680
    assert memory.optimizer_state_bytes == 4_768_399_360
    gb = memory.in_units("GB")
    assert (round(gb["weights"], 1), round(gb["gradients"], 1), round(gb["optimizer_state"], 1)) == (2.4, 2.4, 4.8)
    assert memory.in_units("GiB")["total"] == pytest.approx(9_536_798_720 / 1024**3)  # 8.88 GiB


def test_qwen3_06b_sgd_and_lora():
    sgd = static_memory(QWEN3_06B_PARAMS, QWEN3_06B_PARAMS, 4, 1)
    assert sgd.optimizer_state_bytes == 2_384_199_680  # one momentum buffer
    assert static_memory(QWEN3_06B_PARAMS, QWEN3_06B_PARAMS, 4, 0).optimizer_state_bytes == 0
    # LoRA r=16 on all seven projections of Qwen3-0.6B: per layer 16 * (in + out) summed over q (1024+2048),
    # k, v (1024+1024 each), o (2048+1024), gate, up, down (1024+3072 each) = 360,448; times 28 layers.
    adapters = 28 * 16 * (2 * 3072 + 2 * 2048 + 3 * 4096)
    assert adapters == 10_092_544
    lora = static_memory(QWEN3_06B_PARAMS + adapters, adapters, 4, 2)
    assert lora.weights_bytes == (QWEN3_06B_PARAMS + adapters) * 4
    assert (lora.gradients_bytes, lora.optimizer_state_bytes) == (adapters * 4, adapters * 8)


def test_tiny_model_by_hand():
    assert TINY_PARAMS == 147_840
    assert static_memory(TINY_PARAMS, TINY_PARAMS, 4, 2) == StaticMemory(591_360, 591_360, 1_182_720)
    assert static_memory(TINY_PARAMS, TINY_PARAMS, 4, 1) == StaticMemory(591_360, 591_360, 591_360)
    assert static_memory(TINY_PARAMS, TINY_PARAMS, 2, 0) == StaticMemory(295_680, 295_680, 0)
    # LoRA with fp32 adapters on a bf16 base: frozen weights at 2 bytes, adapters (and their grads, moments) at 4.
    lora = static_memory(TINY_PARAMS + TINY_LORA_ADAPTERS, TINY_LORA_ADAPTERS, 2, 2, trainable_dtype_bytes=4)
    assert lora == StaticMemory(147_840 * 2 + 19_456 * 4, 19_456 * 4, 19_456 * 8)
    assert lora.activations_and_workspace_gib(1.0) == pytest.approx(1.0 - lora.total_bytes / 1024**3)


def _summary(method: str, total: int, trainable: int, dtype: str, **hyper: object) -> dict:
    return {"method": method, "total_params": total, "trainable_params": trainable,
            "hyperparameters": hyperparameters(method, dtype=dtype, **hyper)}  # fmt: skip


def test_from_summary():
    assert static_memory_from_summary(_summary("sgd", TINY_PARAMS, TINY_PARAMS, "float32")) == StaticMemory(
        591_360, 591_360, 591_360)  # fmt: skip
    no_momentum = _summary("sgd", TINY_PARAMS, TINY_PARAMS, "float32", sgd_momentum=0.0)
    assert static_memory_from_summary(no_momentum) == StaticMemory(591_360, 591_360, 0)
    lora = static_memory_from_summary(_summary("lora", TINY_PARAMS + TINY_LORA_ADAPTERS, TINY_LORA_ADAPTERS,
                                               "bfloat16"))  # fmt: skip
    assert lora is not None and lora.optimizer_state_bytes == TINY_LORA_ADAPTERS * 8
    assert lora.weights_bytes == TINY_PARAMS * 2 + TINY_LORA_ADAPTERS * 4
    # Not enough said: dtype auto, no counts, an unregistered method, a hyperparameter the method owns is missing.
    assert static_memory_from_summary(_summary("adamw", 10, 10, "auto")) is None
    assert static_memory_from_summary({"method": "adamw", "hyperparameters": {"dtype": "float32"}}) is None
    assert static_memory_from_summary({**_summary("adamw", 10, 10, "float32"), "method": "adafactor"}) is None
    sgd = _summary("sgd", 10, 10, "float32")
    del sgd["hyperparameters"]["sgd_momentum"]
    assert static_memory_from_summary(sgd) is None


def test_bad_input_is_refused():
    assert dtype_bytes("torch.bfloat16") == 2 and dtype_bytes("float32") == 4
    with pytest.raises(ValueError):
        dtype_bytes("int4")
    with pytest.raises(ValueError):
        static_memory(10, 11, 4, 2)
    with pytest.raises(ValueError):
        static_memory(10, 10, 4, -1)
    assert GB == 10**9


def _allocated_bytes(model, optimizer) -> StaticMemory:
    """What torch really holds after one optimizer step: parameters, .grad tensors, optimizer state tensors."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    grads = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None)
    state = sum(
        t.numel() * t.element_size()
        for per_param in optimizer.state.values()
        for key, t in per_param.items()
        if key != "step"  # AdamW's per-tensor step counter: a scalar, left out of the breakdown on purpose
    )
    return StaticMemory(weights, grads, state)


def _tiny_model(dtype):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.Qwen3Config(**TINY_QWEN3)
    return transformers.AutoModelForCausalLM.from_config(config, dtype=dtype)


def _one_step(model, optimizer) -> StaticMemory:
    import torch

    input_ids = torch.randint(0, TINY_QWEN3["vocab_size"], (2, 12))
    model(input_ids=input_ids, labels=input_ids).loss.backward()
    optimizer.step()
    return _allocated_bytes(model, optimizer)


@pytest.mark.parametrize(
    ("optimizer_name", "momentum", "dtype_name"),
    [("adamw", 0.0, "float32"), ("sgd", 0.9, "float32"), ("sgd", 0.0, "float32"), ("adamw", 0.0, "bfloat16")],
)
def test_full_fine_tuning_matches_what_torch_allocates(optimizer_name, momentum, dtype_name):
    import torch

    model = _tiny_model(getattr(torch, dtype_name))
    params = list(model.parameters())
    optimizer = torch.optim.AdamW(params) if optimizer_name == "adamw" else torch.optim.SGD(params, 0.1, momentum)
    measured = _one_step(model, optimizer)
    assert sum(p.numel() for p in params) == TINY_PARAMS
    buffers = state_buffers(optimizer_name, {"sgd_momentum": momentum})
    assert measured == static_memory(TINY_PARAMS, TINY_PARAMS, dtype_bytes(dtype_name), buffers)


def test_lora_on_a_bf16_base_matches_what_torch_allocates():
    import torch

    peft = pytest.importorskip("peft")
    target = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = peft.get_peft_model(_tiny_model(torch.bfloat16), peft.LoraConfig(r=8, target_modules=target))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable)
    measured = _one_step(model, optimizer)
    assert sum(p.numel() for p in trainable) == TINY_LORA_ADAPTERS
    summary = _summary("lora", TINY_PARAMS + TINY_LORA_ADAPTERS, TINY_LORA_ADAPTERS, "bfloat16")
    assert measured == static_memory_from_summary(summary)


def test_qwen3_06b_parameter_count():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    if not (REAL_TOKENIZER / "config.json").exists():
        pytest.skip("no Qwen3-0.6B-Base config beside the checkout")
    config = transformers.AutoConfig.from_pretrained(REAL_TOKENIZER)
    with torch.device("meta"):  # shapes only: no weights are allocated
        model = transformers.AutoModelForCausalLM.from_config(config)
    assert sum(p.numel() for p in model.parameters()) == QWEN3_06B_PARAMS
