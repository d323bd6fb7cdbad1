"""What the evaluation dtype keeps of a fine-tuning update (mathsft.precision), against hand computations."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from conftest import SMOKE_TASK_MODEL
from mathsft.precision import UpdateSurvival, measure_full, measure_peft, tensor_kind


def _bf16_exact(tensor: torch.Tensor) -> torch.Tensor:
    """Values a bf16 checkpoint holds (the Qwen3 weights are stored in bf16), upcast to fp32 master weights."""
    return tensor.to(torch.bfloat16).float()


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("model.layers.3.self_attn.q_proj.weight", "attention"),
        ("model.layers.3.self_attn.k_norm.weight", "norm"),
        ("model.layers.0.mlp.down_proj.weight", "mlp"),
        ("model.layers.0.input_layernorm.weight", "norm"),
        ("model.norm.weight", "norm"),
        ("model.embed_tokens.weight", "embedding"),
        ("lm_head.weight", "lm_head"),
        ("base_model.model.model.layers.1.self_attn.o_proj", "attention"),
        ("score.weight", "other"),
    ],
)
def test_tensor_kinds(name, kind):
    assert tensor_kind(name) == kind


def test_hand_computation():
    # bf16 has 8 significant bits: at 1.0 a step is 2**-7, at 2.0 it is 2**-6.
    base = torch.tensor([1.0, 2.0])
    update = torch.tensor([2.0**-10, 0.5])  # the first is far below half a step and rounds away; 2.5 is exact
    survival = UpdateSurvival(torch.bfloat16)
    survival.add("model.layers.0.mlp.up_proj.weight", base, update)
    expected = math.sqrt(0.5**2 / (0.5**2 + 2.0**-20))
    result = survival.result()
    assert result["dtype"] == "bfloat16"
    assert result["by_kind"] == {"mlp": pytest.approx(expected, abs=1e-6)}
    assert result["overall"] == pytest.approx(expected, abs=1e-6)
    assert result["base_exact"] is True
    assert result["rounding_error"] == pytest.approx(math.sqrt(2.0**-20 / (0.5**2 + 2.0**-20)), abs=1e-6)


def test_an_update_below_bf16_resolution_rounds_away_and_a_big_one_survives():
    torch.manual_seed(0)
    base = _bf16_exact(torch.randn(64, 32))
    survival = UpdateSurvival(torch.bfloat16)
    survival.add("model.layers.0.self_attn.q_proj.weight", base, base.abs() * 1e-4)  # ~1/80 of a bf16 step
    survival.add("model.layers.0.mlp.gate_proj.weight", base, torch.randn(64, 32))  # as large as the weights
    by_kind = survival.result()["by_kind"]
    assert by_kind["attention"] == 0.0
    assert by_kind["mlp"] == pytest.approx(1.0, abs=0.01)


def test_a_base_off_the_bf16_grid_shows_rounding_noise_not_survival():
    """Tiny updates of fp32 weights (the smoke models): a few weights jump a whole bf16 step, so the cast difference is
    larger than the update; base_exact and rounding_error say that this is noise."""
    torch.manual_seed(0)
    base = torch.randn(256, 64)
    survival = UpdateSurvival(torch.bfloat16)
    survival.add("model.layers.0.mlp.up_proj.weight", base, base.abs() * 1e-5)
    result = survival.result()
    assert result["base_exact"] is False
    assert result["overall"] > 3 and result["rounding_error"] > 3


def test_kinds_without_update_are_left_out_and_fp32_keeps_everything():
    base = torch.randn(8, 8)
    survival = UpdateSurvival(torch.float32)
    survival.add("model.norm.weight", base[0], torch.zeros(8))
    survival.add("model.embed_tokens.weight", base, torch.full((8, 8), 1e-3))
    result = survival.result()
    assert result["by_kind"] == {"embedding": pytest.approx(1.0, abs=1e-3)}
    assert UpdateSurvival().result() == {
        "dtype": "bfloat16", "overall": None, "by_kind": {}, "base_exact": True, "rounding_error": None}


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.Linear(4, 4, bias=False)
        self.norm = nn.LayerNorm(4)


def test_full_fine_tuning_is_measured_against_the_base_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = _Tiny()
    with torch.no_grad():
        model.attn.weight.copy_(_bf16_exact(model.attn.weight))
    save_file({k: v.clone().contiguous() for k, v in model.state_dict().items()}, tmp_path / "model.safetensors")
    with torch.no_grad():
        model.attn.weight.add_(model.attn.weight.abs() * 1e-4)  # rounds away
        model.norm.weight.add_(0.5)  # 1.0 -> 1.5 is exact in bf16
    result = measure_full(model, tmp_path)
    assert result["by_kind"] == {"attention": 0.0, "norm": 1.0}


def test_lora_is_measured_on_the_merged_weight_and_the_trainable_token_rows():
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(SMOKE_TASK_MODEL, dtype=torch.float32)
    config = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"], trainable_token_indices=[2])
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.fill_(1.0)  # B @ A * scale: an update of the order of the weights
            if "trainable_tokens_delta" in name:
                param.add_(1.0)
    result = measure_peft(peft_model)
    assert set(result["by_kind"]) == {"attention", "embedding"}  # the tied LM head row is the embedding row
    assert result["by_kind"]["attention"] == pytest.approx(1.0, abs=0.02)
    assert result["by_kind"]["embedding"] == pytest.approx(1.0, abs=0.02)
