"""The optimizer factory: the right class and hyperparameters, exact no-decay groups, LoRA trains only adapters."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from conftest import SMOKE_MODEL
from mathsft.configs import ALL_LINEAR_PROJECTIONS, MathSFTConfig
from mathsft.errors import UserError
from mathsft.methods import METHODS, method_for
from mathsft.optimizers import build_optimizer, count_parameters, optimizer_parameter_ids


def _args(tmp_path, **overrides) -> MathSFTConfig:
    return MathSFTConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none", **overrides)


@pytest.fixture
def model():
    return AutoModelForCausalLM.from_pretrained(SMOKE_MODEL, dtype=torch.float32)


def test_adamw_class_and_hyperparameters(tmp_path, model):
    args = _args(
        tmp_path,
        optimizer="adamw",
        learning_rate=3e-5,
        weight_decay=0.1,
        adam_beta1=0.8,
        adam_beta2=0.9,
        adam_epsilon=1e-6,
    )
    optimizer = build_optimizer(model, args, method_for(args.optimizer, False))
    assert type(optimizer) is torch.optim.AdamW
    for group in optimizer.param_groups:
        assert group["lr"] == 3e-5
        assert group["betas"] == (0.8, 0.9)
        assert group["eps"] == 1e-6
        assert not group["fused"]  # CPU parameters: fused kernels are CUDA-only
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0]


def test_sgd_class_and_hyperparameters(tmp_path, model):
    args = _args(tmp_path, optimizer="sgd", learning_rate=0.05, sgd_momentum=0.8, sgd_nesterov=True, sgd_dampening=0.0)
    optimizer = build_optimizer(model, args, method_for(args.optimizer, False))
    assert type(optimizer) is torch.optim.SGD
    for group in optimizer.param_groups:
        assert (group["lr"], group["momentum"], group["nesterov"], group["dampening"]) == (0.05, 0.8, True, 0.0)


def test_no_decay_groups_hold_exactly_norms_and_biases(tmp_path, model):
    optimizer = build_optimizer(model, _args(tmp_path, weight_decay=0.01), METHODS['adamw'])
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = sorted(names[id(p)] for p in optimizer.param_groups[0]["params"])
    not_decayed = sorted(names[id(p)] for p in optimizer.param_groups[1]["params"])
    assert not_decayed and all("norm" in n or n.endswith(".bias") for n in not_decayed)
    expected_no_decay = sorted(n for n, p in model.named_parameters() if "norm" in n or p.ndim == 1)
    assert not_decayed == expected_no_decay
    assert "model.embed_tokens.weight" in decayed
    assert all(n.endswith(".weight") and "norm" not in n for n in decayed)
    assert set(decayed) | set(not_decayed) == set(names.values())  # tied lm_head shares embed_tokens


def test_lora_only_adapters_trainable_and_in_optimizer(tmp_path, model):
    peft_model = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules=ALL_LINEAR_PROJECTIONS, task_type="CAUSAL_LM")
    )
    optimizer = build_optimizer(peft_model, _args(tmp_path), METHODS['lora'])
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    held = optimizer_parameter_ids(optimizer)
    assert held == {id(p) for p in peft_model.parameters() if p.requires_grad}
    n_trainable, n_total = count_parameters(peft_model)
    # 7 projections x 2 layers, each with A (r x in) and B (out x r).
    assert 0 < n_trainable < n_total
    assert n_trainable == sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n)


def test_unknown_optimizer_lists_valid_names():
    with pytest.raises(UserError, match="unknown optimizer 'lion'; valid optimizers are: adamw, sgd"):
        method_for("lion", False)
    with pytest.raises(UserError, match="no method trains optimizer 'sgd' with use_peft true"):
        method_for("sgd", True)
    assert list(METHODS) == ["adamw", "sgd", "lora"]
    assert method_for("adamw", True).name == "lora"


def test_trainer_uses_the_factory(tmp_path, model):
    from datasets import Dataset

    from mathsft.template import build_example
    from mathsft.training import MathSFTTrainer

    dataset = Dataset.from_list([build_example("What is $1+1$?", "$\\boxed{2}$")] * 4)
    args = _args(tmp_path, optimizer="sgd", learning_rate=0.1, activation_checkpointing=False)
    trainer = MathSFTTrainer(model=model, args=args, train_dataset=dataset)
    optimizer = trainer.create_optimizer()
    assert type(optimizer) is torch.optim.SGD
    assert optimizer.param_groups[0]["momentum"] == 0.9
