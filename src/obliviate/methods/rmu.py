"""Representation misdirection for unlearning: scramble one layer's activations on forget data.

Equation (Li et al. 2024, WMDP, section 5):

    L = w_f * L_forget + alpha * L_retain
    L_forget = E_forget [ (1/|T|) * sum_t (1/d) * || h_theta^(l)(t) - c * u ||^2 ]
    L_retain = E_retain [ (1/|T|) * sum_t (1/d) * || h_theta^(l)(t) - h_orig^(l)(t) ||^2 ]

with h^(l)(t) the output of decoder layer l (0-based) at token t, d the hidden size, u a fixed
random unit vector (drawn once from a seeded generator, uniform in [0, 1)^d then normalised, as
the paper's code draws it) and c the steering coefficient. On forget text the layer's activations
are pushed towards a large random direction, which the later layers read as noise; on retain text
they are held where the original model puts them. Only the MLP weights of layers l-2..l train
(``Method.trainable_modules``); under LoRA only those modules get adapters.

Paper: Li, Pan, Gopal, Yue, et al., "The WMDP Benchmark: Measuring and Reducing Malicious Use With
Unlearning", ICML 2024, https://arxiv.org/abs/2403.03218.

Defaults (the paper's code's command-line defaults): steering_coeff c = 20, alpha = 100,
w_f = 1.0, the MLP ``down_proj`` of three layers ending at l. The layer is the paper's 7 of 32
scaled to the model's depth: l = round(7/32 * num_layers) (7 of 30 or 32, 4 of 16, 0 of 2).

Deviations:
- Distances count the response tokens (the prompt carries no loss, as everywhere here); with
  ``data.template: text`` every token is a response token, as in the paper's raw-text corpora.
- Each example's tokens are averaged, then the examples; the paper's code averages every token of
  the batch at once.
- The model runs to its end on every forward pass (with the output layer on one position only):
  the layers after l and the output are computed but carry no gradient.
"""

from __future__ import annotations

from typing import Optional

import torch
from pydantic import Field

from obliviate.data.formatting import IGNORE_INDEX
from obliviate.errors import UserError
from obliviate.methods import losses
from obliviate.methods.base import LossTerm, Method, MethodConfig, _innermost, forward, one_logit, register


class RMUConfig(MethodConfig):
    layer: Optional[int] = Field(
        default=None, ge=0, description="decoder layer (0-based) whose output is steered; default round(7/32 * layers)"
    )
    layers_trained: int = Field(default=3, gt=0, description="MLP weights of this many layers, ending at `layer`, train")
    modules: list[str] = Field(
        default_factory=lambda: ["down_proj"], min_length=1,
        description="names of the modules inside each trained layer whose weights train (the paper: down_proj)",
    )
    steering_coeff: float = Field(default=20.0, gt=0, description="length c of the random target vector")
    alpha: float = Field(default=100.0, ge=0, description="weight of the retain activation distance")
    forget_weight: float = Field(default=1.0, ge=0)
    direction_seed: int = Field(default=0, description="seed of the random unit direction u")


def default_layer(num_layers: int) -> int:
    """The paper's layer 7 of Zephyr-7B's 32, at the same relative depth of a model with ``num_layers``."""
    return min(num_layers - 1, max(0, round(7 * num_layers / 32)))


def decoder_layers(model: torch.nn.Module) -> tuple[str, torch.nn.ModuleList]:
    """The name and the list of the decoder layers (the module list as long as the model is deep)."""
    inner = _innermost(model)
    depth = getattr(inner.config, "num_hidden_layers", None)
    for name, module in inner.named_modules():
        if isinstance(module, torch.nn.ModuleList) and depth is not None and len(module) == depth:
            return name, module
    raise UserError(f"method rmu: cannot find the decoder layers of {type(inner).__name__} (no list of {depth} layers)")


def steering_vector(dim: int, coeff: float, seed: int) -> torch.Tensor:
    """c·u, u uniform in [0, 1)^dim from a generator seeded with ``seed``, then normalised (fp32)."""
    u = torch.rand(dim, generator=torch.Generator().manual_seed(seed))
    return coeff * u / u.norm()


def layer_output(network: torch.nn.Module, layer: torch.nn.Module, run) -> torch.Tensor:
    """The output hidden states (B, T, d) of ``layer`` while ``run()`` runs ``network`` forward."""
    seen: list[torch.Tensor] = []

    def keep(module, inputs, output):
        if not seen:  # the first call; gradient checkpointing calls again in backward
            seen.append(output[0] if isinstance(output, tuple) else output)

    handle = layer.register_forward_hook(keep)
    try:
        run()
    finally:
        handle.remove()
    return seen[0]


@register
class RMU(Method):
    name = "rmu"
    Config = RMUConfig
    needs_reference = True  # the retain distance is to the original model's activations
    needs_retain = True

    def _layer(self, model: torch.nn.Module) -> int:
        _, layers = decoder_layers(model)
        layer = self.config.layer if self.config.layer is not None else default_layer(len(layers))
        if layer >= len(layers):
            raise UserError(f"method.layer: {layer} is past the model's last layer ({len(layers) - 1}); use 0..{len(layers) - 1}")
        return layer

    def trainable_modules(self, model):
        prefix, layers = decoder_layers(model)
        layer = self._layer(model)
        wanted = set(self.config.modules)
        names = []
        for index in range(max(0, layer - self.config.layers_trained + 1), layer + 1):
            names += [
                f"{prefix}.{index}.{name}" for name, _ in layers[index].named_modules()
                if name and name.rsplit(".", 1)[-1] in wanted
            ]
        if not names:
            raise UserError(
                f"method.modules: no module named {sorted(wanted)} in the model's layers; "
                "give names of the MLP's linear layers (Llama-style: gate_proj, up_proj, down_proj)"
            )
        return names

    def terms(self, model, batch, reference):
        cfg = self.config
        index = self._layer(model)
        forget = batch["forget"]
        hidden = layer_output(model, decoder_layers(model)[1][index], lambda: forward(model, forget, **one_logit(model)))
        target = steering_vector(hidden.shape[-1], cfg.steering_coeff, cfg.direction_seed).to(hidden.device)
        yield LossTerm("forget", cfg.forget_weight, losses.activation_mse(hidden, target, forget["labels"] != IGNORE_INDEX))

        retain = batch["retain"]
        network = reference.network
        with torch.no_grad():
            original = layer_output(
                network, decoder_layers(network)[1][index],
                lambda: reference.forward(retain, **one_logit(network)),
            )
        hidden = layer_output(model, decoder_layers(model)[1][index], lambda: forward(model, retain, **one_logit(model)))
        yield LossTerm("retain", cfg.alpha, losses.activation_mse(hidden, original, retain["labels"] != IGNORE_INDEX))
