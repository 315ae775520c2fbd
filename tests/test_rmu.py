"""RMU: the activation distance against hand values, the steering direction, the layer rule, and
that only the chosen layers' MLP weights train (full fine-tuning and LoRA).

Hand values of ``activation_mse``: activations a = [[1, 2], [3, 4]] at two positions, target
c·u = [1, 0] (d = 2): position 0 gives ((1−1)² + (2−0)²)/2 = 2, position 1 ((3−1)² + 4²)/2 = 10.
Both counted: (2 + 10)/2 = 6; only position 0: 2. With a second example that counts no position
the batch value is (2 + 0)/2 = 1 (examples average, an empty one contributes 0).
"""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import load_file

from obliviate.data.examples import Example
from obliviate.data.formatting import IGNORE_INDEX
from obliviate.methods import build_method, losses
from obliviate.methods.base import Reference
from obliviate.methods.rmu import default_layer, steering_vector
from obliviate.testing import tiny_model, tiny_tokenizer
from obliviate.train.loop import Encoder


def test_activation_mse_hand_values():
    a = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    u = torch.tensor([1.0, 0.0])
    assert losses.activation_mse(a, u, torch.tensor([[1, 1]])).item() == pytest.approx(6.0)
    assert losses.activation_mse(a, u, torch.tensor([[1, 0]])).item() == pytest.approx(2.0)
    two = torch.cat([a, a])
    assert losses.activation_mse(two, u, torch.tensor([[1, 0], [0, 0]])).item() == pytest.approx(1.0)
    # against another model's activations, position by position
    other = torch.tensor([[[1.0, 1.0], [3.0, 2.0]]])
    assert losses.activation_mse(a, other, torch.tensor([[1, 1]])).item() == pytest.approx((0.5 + 2.0) / 2)


def test_steering_vector_is_seeded_and_has_length_c():
    v = steering_vector(32, 20.0, seed=3)
    assert v.norm().item() == pytest.approx(20.0, rel=1e-6)
    assert bool((v >= 0).all())  # uniform in [0, 1)^d before normalising, as the paper draws it
    assert torch.equal(v, steering_vector(32, 20.0, seed=3))
    assert not torch.equal(v, steering_vector(32, 20.0, seed=4))


def test_default_layer_scales_the_papers_7_of_32():
    assert [default_layer(n) for n in (32, 30, 24, 16, 2, 1)] == [7, 7, 5, 4, 0, 0]


def test_trainable_modules_are_the_mlp_of_the_last_layers():
    model = tiny_model(261, layers=4)
    # 4 layers: layer round(7·4/32) = round(0.875) = 1; three layers ending there: 0 and 1 exist
    assert build_method("rmu", {}).trainable_modules(model) == ["model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"]
    chosen = build_method("rmu", {"layer": 3, "layers_trained": 2, "modules": ["gate_proj", "down_proj"]}).trainable_modules(model)
    assert chosen == [f"model.layers.{i}.mlp.{m}" for i in (2, 3) for m in ("gate_proj", "down_proj")]


def test_bad_layer_and_module_names_are_user_errors():
    from obliviate.errors import UserError

    model = tiny_model(261)
    with pytest.raises(UserError, match="method.layer"):
        build_method("rmu", {"layer": 2}).trainable_modules(model)
    with pytest.raises(UserError, match="method.modules"):
        build_method("rmu", {"modules": ["fc_out"]}).trainable_modules(model)


def test_terms_on_the_tiny_model():
    """The forget term is the distance of layer 0's output to c·u; the retain term is 0 where the
    model is still the original, and positive once the layer moves."""
    tok = tiny_tokenizer()
    model = tiny_model(len(tok), seed=1)
    encoder = Encoder(tok, 64, "auto")
    forget = encoder.batch([Example("What is the secret code?", "The code is 4471.")], torch.device("cpu"))
    retain = encoder.batch([Example("Name a fruit.", "An apple.")], torch.device("cpu"))
    method = build_method("rmu", {"steering_coeff": 5.0})
    original = copy.deepcopy(model).requires_grad_(False)
    out = method.loss(model, {"forget": forget, "retain": retain}, Reference(model, original))
    with torch.no_grad():
        hidden = model(input_ids=forget["input_ids"], attention_mask=forget["attention_mask"], output_hidden_states=True).hidden_states[1]
    mask = forget["labels"] != IGNORE_INDEX
    expected = ((hidden - steering_vector(32, 5.0, 0)).pow(2).mean(-1)[mask]).mean()
    assert out.parts["forget"] == pytest.approx(expected.item(), rel=1e-5)
    assert out.parts["retain"] == pytest.approx(0.0, abs=1e-10)
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight.add_(0.1)
    moved = method.loss(model, {"forget": forget, "retain": retain}, Reference(model, original))
    assert moved.parts["retain"] > 1e-6


@pytest.mark.parametrize("lora", [False, True])
def test_only_the_chosen_mlp_weights_train(lora, make_config, tiny_model_dir, tmp_path):
    from obliviate.train.loop import run_training

    config = make_config("method.name=rmu", "train.precision=fp32", f"train.lora.enabled={str(lora).lower()}")
    run_training(config, tmp_path / "run", progress=False, log=lambda m: None)
    saved = {}
    for file in (tmp_path / "run" / "model").glob("*.safetensors"):
        saved.update(load_file(str(file)))
    if lora:  # adapters only on layer 0's down_proj (the tiny model has 2 layers: layer 0)
        assert {k.split(".lora_")[0] for k in saved} == {"base_model.model.model.layers.0.mlp.down_proj"}
        assert max(t.abs().max().item() for k, t in saved.items() if "lora_B" in k) > 0
    else:
        start = load_file(str(tiny_model_dir / "model.safetensors"))
        changed = {k for k in start if not torch.equal(start[k], saved[k])}
        assert changed == {"model.layers.0.mlp.down_proj.weight"}
