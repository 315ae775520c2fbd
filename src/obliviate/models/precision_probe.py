"""``train.precision: auto`` on a CPU: time the model's own products in fp32 and bf16, pick the faster.

Whether bf16 autocast pays on a CPU cannot be read from its flags: two CPUs with AVX512-BF16
differ (bf16 was 30-45% slower than fp32 on one 2-core Xeon, faster on another). So ``auto``
times the products a training step is made of (hidden x hidden, hidden x intermediate and the
output layer's hidden x vocab; forward and backward through autograd, with fp32 weights as
autocast keeps them), weights each by how often a step runs it, and takes bf16 only when it is
faster by :data:`BF16_MARGIN`, so measurement noise cannot flip the choice.

The timings are cached as JSON under ``$OBLIVIATE_HOME/cache/precision/``, one file per CPU model
name, torch version, thread count and set of shapes, so a machine measures once; a file that
cannot be read back is measured again and rewritten. Processes that start together share one
measurement through a file lock, so every process of a run makes the same choice.
On CUDA the rule is unchanged: bf16 where the device supports it.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from obliviate.io import atomic_write_json, obliviate_home
from obliviate.models.hardware import cpu_name

# bf16 must beat fp32 by this share of the step's estimated time. Kept at the tolerance:
# a choice of fp32 then costs at most ~5% against a bf16 that was slightly faster.
BF16_MARGIN = 0.05
# Rows of each timed product (a batch of a few short examples); the same for every model, so
# timings depend on the shapes alone.
PROBE_TOKENS = 256
# Bumped when what is timed changes, so old cache files are measured again.
PROBE_VERSION = 1
DTYPES = ("fp32", "bf16")
# The default model's widths (SmolLM2-135M), for callers that have no model config at hand.
DEFAULT_SHAPES = {"hidden": 576, "intermediate": 1536, "vocab": 49152, "layers": 30}


@dataclass
class PrecisionChoice:
    """What a run trains in and why: ``mixed`` is accelerate's value ('bf16' or 'no');
    ``record`` is what env.json keeps (the timings, the choice, the reason, the cache)."""

    mixed: str
    record: dict[str, Any] = field(default_factory=dict)


def model_shapes(model_config: Any = None) -> dict[str, int]:
    """Hidden, intermediate and vocabulary widths and the layer count of a transformers config."""
    if model_config is None:
        return dict(DEFAULT_SHAPES)
    if hasattr(model_config, "get_text_config"):  # multimodal configs nest the language model
        model_config = model_config.get_text_config()

    def first(*names: str) -> Optional[int]:
        for name in names:
            value = getattr(model_config, name, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    hidden = first("hidden_size", "n_embd", "d_model")
    vocab = first("vocab_size")
    if hidden is None or vocab is None:
        return dict(DEFAULT_SHAPES)
    return {
        "hidden": hidden,
        "intermediate": first("intermediate_size", "n_inner", "ffn_dim") or 4 * hidden,
        "vocab": vocab,
        "layers": first("num_hidden_layers", "n_layer", "num_layers") or 1,
    }


def products(shapes: dict[str, int]) -> dict[str, tuple[int, int]]:
    """The timed products, as (in_features, out_features) of a linear layer."""
    hidden = shapes["hidden"]
    return {
        "hidden_x_hidden": (hidden, hidden),
        "hidden_x_intermediate": (hidden, shapes["intermediate"]),
        "hidden_x_vocab": (hidden, shapes["vocab"]),
    }


def step_weights(shapes: dict[str, int]) -> dict[str, int]:
    """How many of each product one forward and backward runs: per layer the four attention
    projections and the three of a gated MLP, then the output layer once."""
    layers = shapes["layers"]
    return {"hidden_x_hidden": 4 * layers, "hidden_x_intermediate": 3 * layers, "hidden_x_vocab": 1}


def time_product(in_features: int, out_features: int, dtype: str, tokens: int = PROBE_TOKENS,
                 budget_s: float = 1.0) -> float:
    """Milliseconds of one forward and backward of a ``tokens x in_features`` input through an
    fp32 ``Linear(in_features, out_features)``, plain (``fp32``) or under CPU bf16 autocast
    (``bf16``). The fastest of a few repeats after a warm-up, so a busy moment is not measured."""
    generator = torch.Generator().manual_seed(0)
    layer = torch.nn.Linear(in_features, out_features, bias=False)
    inputs = torch.randn(tokens, in_features, generator=generator).requires_grad_(True)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16")

    def once() -> float:
        start = time.perf_counter()
        with autocast:
            out = layer(inputs)
        torch.autograd.grad(out, (inputs, layer.weight), grad_outputs=torch.ones_like(out))
        return time.perf_counter() - start

    once()  # warm-up: kernel selection, first allocations
    best, spent, repeats = math.inf, 0.0, 0
    while repeats < 2 or (repeats < 5 and spent < budget_s):
        elapsed = once()
        best, spent, repeats = min(best, elapsed), spent + elapsed, repeats + 1
    return best * 1000


def cache_key(shapes: dict[str, int]) -> dict[str, Any]:
    """What the timings depend on. The layer count is left out: it only weights the products."""
    return {
        "probe": PROBE_VERSION,
        "cpu": cpu_name(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "tokens": PROBE_TOKENS,
        "shapes": {name: shapes[name] for name in ("hidden", "intermediate", "vocab")},
    }


def cache_file(key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return obliviate_home() / "cache" / "precision" / f"{digest}.json"


def _read_cache(path: Path, key: dict[str, Any], names) -> Optional[dict[str, dict[str, float]]]:
    """The cached timings, or None when the file is missing, unreadable or not for ``key``."""
    try:
        data = json.loads(path.read_text())
        ms = data["ms"]
        if data["key"] != key:
            return None
        for name in names:
            for dtype in DTYPES:
                value = ms[name][dtype]
                if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                    return None
        return {name: {dtype: float(ms[name][dtype]) for dtype in DTYPES} for name in names}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _measure(shapes: dict[str, int]) -> dict[str, dict[str, float]]:
    # Looked up at call time so tests can swap in fake timings.
    return {
        name: {dtype: time_product(n_in, n_out, dtype) for dtype in DTYPES}
        for name, (n_in, n_out) in products(shapes).items()
    }


def measured_timings(shapes: dict[str, int]) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """The timings for ``shapes`` (from the cache, or measured and cached) and where they came from."""
    key = cache_key(shapes)
    path = cache_file(key)
    names = list(products(shapes))
    where: dict[str, Any] = {"cache_file": str(path)}
    cached = _read_cache(path, key, names)
    if cached is not None:
        return cached, {**where, "from_cache": True}
    try:
        return _locked(path, lambda: _measure_into(path, key, shapes, names, where))
    except OSError as error:  # a read-only home: measure for this run alone
        return _measure(shapes), {**where, "from_cache": False, "cache_error": str(error)}


def _measure_into(path: Path, key, shapes, names, where) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    # Another process may have measured while this one waited for the lock.
    cached = _read_cache(path, key, names)
    if cached is not None:
        return cached, {**where, "from_cache": True}
    replaced = path.exists()
    ms = _measure(shapes)
    atomic_write_json(path, {"key": key, "ms": ms, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return ms, {**where, "from_cache": False, **({"replaced_unreadable_cache": True} if replaced else {})}


def _locked(path: Path, work: Callable[[], Any]) -> Any:
    from filelock import FileLock

    lock_dir = obliviate_home() / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_dir / f"precision-{path.stem}.lock")):
        return work()


def decide(ms: dict[str, dict[str, float]], weights: dict[str, int], margin: float = BF16_MARGIN) -> tuple[str, dict[str, float], str]:
    """('bf16' or 'no', the estimated step time per dtype, the reason) from per-product timings."""
    step = {dtype: sum(weights[name] * ms[name][dtype] for name in weights) for dtype in DTYPES}
    ratio = step["bf16"] / step["fp32"]
    if ratio < 1 - margin:
        return "bf16", step, f"bf16 autocast measured {1 - ratio:.0%} faster than fp32 on this CPU"
    if ratio < 1:
        return "no", step, (f"bf16 autocast measured only {1 - ratio:.0%} faster than fp32 on this CPU "
                            f"(needs {margin:.0%}); fp32 kept")
    return "no", step, f"bf16 autocast measured {ratio - 1:.0%} slower than fp32 on this CPU"


def precision_choice(requested: str = "auto", model_config: Any = None) -> PrecisionChoice:
    """The run's precision: as asked for, or for ``auto`` the faster of fp32 and bf16 autocast
    measured on this CPU for the model's shapes (``model_config``; the default model's without)."""
    if requested == "fp32":
        return PrecisionChoice("no", {"requested": "fp32", "chosen": "fp32", "reason": "train.precision: fp32"})
    if requested == "bf16":
        return PrecisionChoice("bf16", {"requested": "bf16", "chosen": "bf16", "reason": "train.precision: bf16"})
    if torch.cuda.is_available():
        bf16 = torch.cuda.is_bf16_supported()
        reason = "CUDA device supports bf16 (not measured)" if bf16 else "CUDA device without bf16 support"
        return PrecisionChoice("bf16" if bf16 else "no",
                               {"requested": "auto", "chosen": "bf16" if bf16 else "fp32", "reason": reason})
    shapes = model_shapes(model_config)
    ms, where = measured_timings(shapes)
    weights = step_weights(shapes)
    mixed, step, reason = decide(ms, weights)
    return PrecisionChoice(mixed, {
        "requested": "auto",
        "chosen": "bf16" if mixed == "bf16" else "fp32",
        "reason": reason,
        "margin": BF16_MARGIN,
        "shapes": shapes,
        "tokens": PROBE_TOKENS,
        "ms": {name: {dtype: round(value, 4) for dtype, value in per.items()} for name, per in ms.items()},
        "weights": weights,
        "step_estimate_ms": {dtype: round(value, 3) for dtype, value in step.items()},
        **where,
    })
