"""THE training loop. Every unlearning method (and plain fine-tuning) runs through ``run_training``.

One optimizer step = ``grad_accum`` micro-batches. Micro-batch ``i`` of the whole run takes the
examples at positions ``[i*G, (i+1)*G)`` of a stream of seeded per-epoch permutations
(``G = batch_size * world_size``), and process ``r`` takes every ``world_size``-th of them. So
the data of a step depends only on (seed, step): a resumed run sees exactly the batches an
uninterrupted one would, and N processes see together what one process sees with an N-times
larger batch.
"""

from __future__ import annotations

import copy
import errno
import json
import math
import resource
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from obliviate.config import RunConfig
from obliviate.data.examples import Example
from obliviate.data.formatting import Encoded, collate, encode_pair, pad_id
from obliviate.data.loaders import load_spec
from obliviate.errors import StorageError, TrainingDiverged, UserError
from obliviate.io import append_jsonl, atomic_write_json, atomic_write_text
from obliviate.methods import build_method
from obliviate.methods.base import BatchContext, Method
from obliviate.models.hardware import choose_precision, measure_matmul_gflops
from obliviate.models.loading import adapter_weights_file, quiet_peft, refusing_pickles
from obliviate.models.precision_probe import PrecisionChoice, precision_choice
from obliviate.train import checkpoint as ckpt
from obliviate.train import efficiency, trackers
from obliviate.train.run_dir import check_run_dir, config_inputs, environment, prepare_run_dir, release_run_dir
from obliviate.train.run_lock import lock_depth


@dataclass
class TrainData:
    forget: list[Example]
    retain: Optional[list[Example]] = None
    random_answers: list[str] = field(default_factory=list)


@dataclass
class TrainState:
    """What stop hooks and ``Method.on_step_end`` see after each optimizer step."""

    step: int
    total_steps: int
    record: dict[str, Any]
    model: torch.nn.Module  # unwrapped (no DDP wrapper); LoRA adapters attached if any
    tokenizer: Any
    run_dir: Path
    config: RunConfig
    is_main: bool


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    stop_reason: str
    seconds: float
    tokens_per_s: float
    peak_memory_mb: float
    model_dir: Optional[Path]
    model: Any = None  # the trained model object (unwrapped; LoRA attached), for in-process evaluation


StopHook = Callable[[TrainState], Optional[str]]


# ----------------------------------------------------------------------------- data


def load_train_data(config: RunConfig, method: Method) -> TrainData:
    """Read and validate every data set before a model is loaded (bad input fails fast)."""
    data = config.data
    forget = load_spec(data.forget, config, "data.forget")
    retain = None
    if method.needs_retain:
        if data.retain is None:
            raise UserError(f"method '{method.name}' needs a retain set: set data.retain.path")
        retain = load_spec(data.retain, config, "data.retain")
    elif data.retain is not None:
        retain = load_spec(data.retain, config, "data.retain")
    pool: list[str] = []
    if data.random_answers is not None:
        # Only the answers matter in a pool; a prompt field is not required.
        answers_only = data.random_answers.model_copy(update={"prompt_field": data.random_answers.response_field})
        pool = [e.response for e in load_spec(answers_only, config, "data.random_answers")]
    elif retain is not None:
        pool = [e.response for e in retain]
    return TrainData(forget, retain, pool)


def stream_indices(
    n: int, seed: int, start: int, count: int, order: Optional[Callable[[int], np.ndarray]] = None
) -> list[int]:
    """Positions [start, start+count) of an endless stream of seeded permutations of range(n);
    ``order(epoch)``, when given, is epoch's permutation instead (``train.group_by_length``)."""
    out: list[int] = []
    position = start
    while len(out) < count:
        epoch, offset = divmod(position, n)
        perm = order(epoch) if order is not None else np.random.default_rng([seed, epoch]).permutation(n)
        take = min(count - len(out), n - offset)
        out.extend(int(i) for i in perm[offset: offset + take])
        position += take
    return out


class Encoder:
    """Tokenises examples once and remembers them (random-answer pairs repeat across steps)."""

    def __init__(self, tokenizer, max_length: int, template: str):
        self.tokenizer, self.max_length, self.template = tokenizer, max_length, template
        self._cache: dict[tuple[str, str], Encoded] = {}
        self.pad = pad_id(tokenizer)

    def encode(self, example: Example) -> Encoded:
        key = (example.prompt, example.response)
        if key not in self._cache:
            if len(self._cache) > 50_000:
                self._cache.clear()
            self._cache[key] = encode_pair(self.tokenizer, example.prompt, example.response, self.max_length, self.template)
        return self._cache[key]

    def batch(self, examples: Sequence[Example], device) -> dict[str, torch.Tensor]:
        tensors = collate([self.encode(e) for e in examples], self.pad)
        return {k: v.to(device) for k, v in tensors.items()}

    def warn_truncation(self, examples: Sequence[Example], role: str) -> int:
        cut = sum(self.encode(e).prompt_truncated for e in examples)
        if cut:
            warnings.warn(
                f"{cut} of {len(examples)} rows of {role} have prompts longer than data.max_length={self.max_length} "
                "tokens; their prompts were cut from the left (raise data.max_length to keep them whole)",
                stacklevel=2,
            )
        return cut


def total_steps(config: RunConfig, n_forget: int, world_size: int) -> int:
    train = config.train
    if train.max_steps is not None:
        return train.max_steps
    per_step = train.batch_size * world_size * train.grad_accum
    return max(1, math.ceil(train.epochs * n_forget / per_step))


# ----------------------------------------------------------------------------- model


def attach_lora(
    model: torch.nn.Module, config: RunConfig, seed: int, modules: Optional[list[str]] = None
) -> torch.nn.Module:
    """Put a new LoRA adapter on ``train.lora.target_modules``, or on exactly the modules named
    ``modules`` (full names, chosen by a method or by saliency) when given."""
    from peft import LoraConfig, get_peft_model

    lora = config.train.lora
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    absent = [m for m in lora.target_modules if m not in names] if modules is None else []
    if absent:
        raise UserError(
            f"train.lora.target_modules: the model has no module named {absent[0]!r} "
            f"(linear layers it has: {', '.join(sorted(n for n in names if n.endswith('proj'))) or 'see `obliviate models info`'})"
        )
    torch.manual_seed(seed)  # adapter initialisation is part of the run's seeded state
    peft_config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules if modules is None else modules),
        task_type="CAUSAL_LM",
    )
    with quiet_peft():
        return get_peft_model(model, peft_config)


def adapter_folder(spec: Optional[str]) -> Optional[Path]:
    """The LoRA adapter folder named by ``train.lora.init_from`` (a run folder means its ``model/``)."""
    if spec is None:
        return None
    folder = Path(spec).expanduser()
    if (folder / "model" / "adapter_config.json").is_file():
        folder = folder / "model"
    if not (folder / "adapter_config.json").is_file():
        raise UserError(
            f"train.lora.init_from: {spec} is not a LoRA adapter folder (no adapter_config.json); give the folder "
            "`obliviate finetune` wrote (its run folder or run/model), or leave init_from out for a new adapter"
        )
    return folder


def continue_adapter(
    model: torch.nn.Module, folder: Path, *, needs_reference: bool, dropout: float = 0.0
) -> tuple[torch.nn.Module, Optional[torch.nn.Module]]:
    """Put a saved LoRA adapter on ``model`` and make it trainable (the papers keep training the
    fine-tuning adapter). Rank, alpha and target modules are the adapter's; dropout is this run's
    (``train.lora.dropout``), not the fine-tuning run's. Switching the adapter off would give the
    model *before* that fine-tuning, not the model unlearning starts from, so the reference is a
    frozen merged copy of base + adapter, made only when the method needs one."""
    from peft import PeftConfig, PeftModel

    frozen = None
    try:
        with quiet_peft(), refusing_pickles(adapter_weights_file(folder)):
            if needs_reference:
                frozen = PeftModel.from_pretrained(copy.deepcopy(model), str(folder)).merge_and_unload()
                frozen = frozen.eval().requires_grad_(False)
            adapter_config = PeftConfig.from_pretrained(str(folder))
            adapter_config.lora_dropout = dropout
            return PeftModel.from_pretrained(model, str(folder), config=adapter_config, is_trainable=True), frozen
    except (ValueError, KeyError, RuntimeError) as err:
        raise UserError(
            f"train.lora.init_from: the adapter in {folder} does not fit model.name "
            f"({str(err).strip().splitlines()[0][:200]})"
        ) from None


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """Keep only each decoder layer's input and recompute the rest during backward.

    The non-reentrant variant needs no input that requires grad, so it works under LoRA, where
    the embeddings are frozen, without the usual ``enable_input_require_grads`` hook.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not getattr(base, "supports_gradient_checkpointing", False):
        raise UserError(f"train.gradient_checkpointing: {type(base).__name__} does not support gradient checkpointing")
    kwargs = {"use_reentrant": False}
    if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5 name
        base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


# ----------------------------------------------------------------------------- the loop


def run_training(config: RunConfig, run_dir: Path, **options: Any) -> TrainResult:
    """Train ``config.method`` on ``config.data``; write the run folder; return a summary.

    The run folder's lock is held from its preparation to the end of the run, whatever way the
    run ends (see :func:`_run_training` for the options).
    """
    depth = lock_depth(Path(run_dir))  # a caller may hold the folder already: only this run's hold is released
    try:
        return _run_training(config, run_dir, **options)
    finally:
        if lock_depth(Path(run_dir)) > depth:
            release_run_dir(Path(run_dir))


def _run_training(
    config: RunConfig,
    run_dir: Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    stop_hooks: Sequence[StopHook] = (),
    model: Optional[torch.nn.Module] = None,
    tokenizer: Any = None,
    method: Optional[Method] = None,
    data: Optional[TrainData] = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    on_run_dir: Optional[Callable[[Path], None]] = None,
    own_data: Sequence[Path] = (),
) -> TrainResult:
    """Train ``config.method`` on ``config.data``; write the run folder; return a summary.

    ``model``/``tokenizer`` may be passed in (already loaded); the caller's model object is
    trained in place then, but never any file it came from. ``on_run_dir(run_dir)`` runs on the
    main process once the run folder exists, before anything is trained (the Python API writes
    data sets given in memory there, so that ``config.yaml`` names real files; ``own_data`` names
    those files, which may lie in the run folder as no other input may).
    """
    report_to = trackers.check_trackers(config)  # a missing tracker package fails before anything loads
    method = method or build_method(config.method.name, config.method.options())
    data = data or load_train_data(config, method)
    run_dir = Path(run_dir)
    if resume:
        _check_resume_config(run_dir, config)
    # The accelerator waits for the model: ``precision: auto`` times the model's own shapes.
    # Until then the process state alone says which process is the main one.
    from accelerate import PartialState

    is_main = PartialState(cpu=not torch.cuda.is_available()).is_main_process
    seed = config.train.seed
    adapter_start = adapter_folder(config.train.lora.init_from) if config.train.lora.enabled else None
    if is_main:  # the folder is checked before any model loads
        check_run_dir(run_dir, inputs=config_inputs(config), resume=resume, own=own_data)
    if model is None:  # loaded before the run folder is made: a bad model path leaves nothing behind
        from obliviate.models.loading import load_model_and_tokenizer

        model, tokenizer = load_model_and_tokenizer(config.model.name, trust_remote_code=config.model.trust_remote_code)
    precision = precision_choice(config.train.precision, getattr(model, "config", None))
    accelerator = make_accelerator(precision, log_with=report_to, logging_dir=trackers.trackers_dir(run_dir))
    if is_main:
        prepare_run_dir(run_dir, overwrite=overwrite, resume=resume)
        if on_run_dir is not None:
            on_run_dir(run_dir)
    accelerator.wait_for_everyone()
    torch.manual_seed(seed)
    use_lora = config.train.lora.enabled
    frozen = None
    if method.needs_reference and not use_lora:
        frozen = copy.deepcopy(model).eval().requires_grad_(False).to(accelerator.device)
    encoder = Encoder(tokenizer, config.data.max_length, config.data.template)
    # Which weights train: the method may name its modules; saliency scores the model as loaded,
    # before any adapter, and under LoRA picks the modules that get one.
    trained_modules = method.trainable_modules(model)
    salient = None
    if config.train.saliency is not None:
        from obliviate.train.saliency import select_salient

        salient = select_salient(model, encoder, data.forget, config, trained_modules, accelerator.device)
        trained_modules = salient.modules if use_lora else trained_modules
        log(f"saliency: training {salient.share:.2%} of the eligible weights")
    if use_lora and adapter_start is not None:
        model, frozen = continue_adapter(
            model, adapter_start, needs_reference=method.needs_reference, dropout=config.train.lora.dropout
        )
        frozen = frozen.to(accelerator.device) if frozen is not None else None
    elif use_lora:
        model = attach_lora(model, config, seed, trained_modules)
    if trained_modules is not None:
        from obliviate.train.trainable import restrict_to_modules

        restrict_to_modules(model, trained_modules, why=f"method '{method.name}'" if salient is None else "train.saliency")
    if salient is not None and not use_lora:
        salient.mask_gradients(model)
    if use_lora and config.train.lora.fused:
        from obliviate.models.lora_fused import fuse_lora_layers

        fuse_lora_layers(model)
    if config.train.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    model.train()
    if hasattr(model.config, "use_cache"):
        model.config.use_cache = False

    encoder.warn_truncation(data.forget, "data.forget")
    if data.retain is not None:
        encoder.warn_truncation(data.retain, "data.retain")

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.train.lr, weight_decay=config.train.weight_decay)
    world = accelerator.num_processes
    steps = total_steps(config, len(data.forget), world)
    from transformers import get_linear_schedule_with_warmup

    scheduler = get_linear_schedule_with_warmup(optimizer, config.train.warmup_steps, steps)
    # The scheduler is stepped by hand, once per optimizer step (accelerate would step it once
    # per process when it wraps it).
    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped = accelerator.unwrap_model(model)
    reference = efficiency.CountingReference(model, frozen) if method.needs_reference else None
    # run_dir: where a method caches fixed reference quantities; base_dir: what relative paths in
    # its options are taken from (the config file's folder).
    context = {
        "tokenizer": tokenizer, "encoder": encoder, "data": data, "device": accelerator.device,
        "run_dir": run_dir, "base_dir": config._base_dir,
    }
    gate_config = method.forget_gate_config() if hasattr(method, "forget_gate_config") else None
    if gate_config is not None:
        from obliviate.gating.forget_gate import build_gate

        # The gate re-judges the forget prompts after a step, before any stop hook reads the step.
        context["forget_gate"] = build_gate(
            gate_config, [{**e.extra, "prompt": e.prompt} for e in data.forget], template=encoder.template
        )
        stop_hooks = [context["forget_gate"], *stop_hooks]
    method.setup(unwrapped, reference, context)
    if config.early_stopping is not None:
        from obliviate.gating.early_stopping import build_stopper

        stopper = build_stopper(config.early_stopping, data=data, template=config.data.template, base_dir=config._base_dir)
        stopper.prepare(unwrapped, tokenizer, run_dir, is_main)
        stop_hooks = [*stop_hooks, stopper]

    start_step = 0
    log_path = run_dir / "train_log.jsonl"
    checkpoints = run_dir / "checkpoints"
    if resume:
        latest = ckpt.latest_checkpoint(checkpoints)
        if latest is None:
            raise UserError(f"cannot resume: {checkpoints} has no complete checkpoint")
        start_step = ckpt.load_checkpoint(
            latest[1], unwrapped, optimizer, scheduler, rank=accelerator.process_index, method=method
        )
        if is_main:
            _truncate_log(log_path, start_step)
        log(f"resuming {run_dir} from step {start_step}")
    if is_main:
        with storing("config.yaml and env.json", run_dir):
            atomic_write_text(run_dir / "config.yaml", config.to_yaml())
            atomic_write_json(
                run_dir / "env.json",
                environment(seed, precision.mixed,
                            {"processes": world, "lora": use_lora, "precision_choice": precision.record}),
            )

    # Measured before the clock starts: the matmul peak the run's throughput is shown beside.
    peak_dtype = torch.bfloat16 if precision.mixed == "bf16" else torch.float32
    peak_for = efficiency.peak_seconds()
    peak_gflops = measure_matmul_gflops(peak_dtype, seconds=peak_for) if is_main and peak_for > 0 else None
    parameter_counts = efficiency.count_parameters(unwrapped)  # before on_train_end may merge or change it
    if reference is not None:
        reference.tokens = 0  # only the reference forwards of training steps, not those a method's setup cached
    progress_bar = _progress(progress and is_main, steps, start_step)
    stop_reason = "max_steps"
    tokens_total, padded_total, started = 0, 0, time.perf_counter()
    batch_size, accum = config.train.batch_size, config.train.grad_accum
    rank = accelerator.process_index
    forget_order = None
    if config.train.group_by_length:
        from obliviate.train.length_groups import LengthGroupedOrder

        lengths = [len(encoder.encode(e).input_ids) for e in data.forget]
        forget_order = LengthGroupedOrder(lengths, seed, batch_size * world)
    if report_to:
        if is_main and "mlflow" in report_to:
            trackers.point_mlflow_at(run_dir)
        accelerator.init_trackers(
            config.run.name, config=trackers.flat_config(config), init_kwargs=trackers.init_kwargs(run_dir, config.run.name)
        )
    step = start_step
    try:
        for step in range(start_step + 1, steps + 1):
            step_start = time.perf_counter()
            parts_sum: dict[str, float] = {}
            step_tokens = 0
            for micro in range(accum):
                micro_index = (step - 1) * accum + micro
                groups = _micro_batch(
                    method, data, micro_index, batch_size, world, rank, seed, config.train.retain_batch_size,
                    forget_order=forget_order,
                )
                batch = {name: encoder.batch(examples, accelerator.device) for name, examples in groups.items() if examples}
                step_tokens += sum(int(b["attention_mask"].sum()) for b in batch.values())
                padded_total += sum(b["input_ids"].numel() for b in batch.values())
                sync = micro == accum - 1
                with (accelerator.no_sync(model) if not sync and world > 1 else _null()):
                    if world == 1 and type(method).terms is not Method.terms:
                        parts = _backward_term_by_term(accelerator, method, model, batch, reference, accum)
                    else:
                        # Several backward passes per step confuse DDP's gradient reducer, so under
                        # more than one process (or for a method with only ``loss``) the terms are
                        # summed and backpropagated once.
                        with accelerator.autocast():
                            out = method.loss(model, batch, reference)
                        parts = {**out.parts, "total": out.total.item()}
                        if math.isfinite(parts["total"]):  # a non-finite loss is never backpropagated
                            accelerator.backward(out.total / accum)
                if not math.isfinite(parts["total"]):
                    raise _diverged(run_dir, step, parts, method=method.name, total_steps=steps, is_main=is_main)
                for name, value in parts.items():
                    parts_sum[name] = parts_sum.get(name, 0.0) + value / accum
            grad_norm = _clip(accelerator, trainable, config.train.max_grad_norm)
            if not math.isfinite(grad_norm):
                raise _diverged(
                    run_dir, step, {"grad_norm": grad_norm}, method=method.name, total_steps=steps, is_main=is_main
                )
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)

            step_tokens = int(accelerator.reduce(torch.tensor(step_tokens, device=accelerator.device), "sum"))
            parts = _mean_across(accelerator, parts_sum)
            elapsed = time.perf_counter() - step_start
            tokens_total += step_tokens
            record = {
                "step": step,
                "epoch": round(step * batch_size * world * accum / len(data.forget), 4),
                "lr": scheduler.get_last_lr()[0],
                **{f"loss/{k}": v for k, v in parts.items()},
                "grad_norm": grad_norm,
                "tokens": step_tokens,
                "tokens_per_s": step_tokens / elapsed if elapsed > 0 else 0.0,
                "elapsed_s": round(time.perf_counter() - started, 3),
            }
            if is_main and (step % config.train.log_every == 0 or step == steps):
                with storing("train_log.jsonl", run_dir):
                    append_jsonl(log_path, record)
            if report_to and (step % config.train.log_every == 0 or step == steps):
                accelerator.log(record, step=step)  # main process only, inside accelerate
            if progress_bar is not None:
                progress_bar[0].update(progress_bar[1], advance=1, loss=parts.get("total", 0.0))
            state = TrainState(step, steps, record, unwrapped, tokenizer, run_dir, config, is_main)
            reason = method.on_step_end(state)
            for hook in stop_hooks:
                reason = reason or hook(state)
            if config.train.save_every and step % config.train.save_every == 0 and step < steps:
                ckpt.save_checkpoint(
                    checkpoints, step, unwrapped, optimizer, scheduler,
                    is_main=is_main, rank=rank, keep=config.train.keep_checkpoints, method_state=method.state_dict(),
                )
            if reason:
                stop_reason = reason
                log(f"stopping at step {step}: {reason}")
                break
    except BaseException:
        trackers.finish_trackers(accelerator)  # a diverged or failed run keeps what it logged
        raise
    finally:
        if progress_bar is not None:
            progress_bar[0].stop()

    trackers.finish_trackers(accelerator)
    seconds = time.perf_counter() - started
    counted = torch.tensor([padded_total, reference.tokens if reference is not None else 0], device=accelerator.device)
    padded_total, reference_tokens = (int(v) for v in accelerator.reduce(counted, "sum").tolist())
    method.on_train_end(unwrapped)  # every process, so the returned model is the saved one
    accelerator.wait_for_everyone()
    model_dir = None
    if is_main:
        with storing("the final model", run_dir / "model"):
            model_dir = save_final_model(unwrapped, tokenizer, run_dir / "model", merge=use_lora and config.train.merge_lora)
        summary = {
            "method": method.name,
            "steps": step,
            "total_steps": steps,
            "stop_reason": stop_reason,
            "seconds": round(seconds, 2),
            "tokens_per_s": tokens_total / seconds if seconds > 0 else 0.0,
            "peak_memory_mb": round(peak_memory_mb(), 1),
            "processes": world,
            "lora": use_lora,
        }
        if salient is not None:
            summary["saliency"] = salient.summary()
        summary["efficiency"] = efficiency.efficiency_block(
            seconds=seconds, steps_run=step - start_step, trained_tokens=tokens_total, padded_tokens=padded_total,
            reference_tokens=reference_tokens, counts=parameter_counts,
            recompute=config.train.gradient_checkpointing,
            forget_set_tokens=sum(len(encoder.encode(e).input_ids) for e in data.forget),
            peak_gflops=peak_gflops, peak_dtype=str(peak_dtype).removeprefix("torch."), processes=world,
            memory=efficiency.memory_figures(),
        )
        with storing("train_summary.json", run_dir):
            atomic_write_json(run_dir / "train_summary.json", summary)
    accelerator.wait_for_everyone()
    # Under mixed precision accelerate wraps the model's forward in autocast; the model handed
    # back runs in full precision, as it does when loaded from the saved folder.
    unwrapped = accelerator.unwrap_model(model, keep_fp32_wrapper=False)
    unwrapped.eval()
    return TrainResult(
        run_dir, step, stop_reason, seconds, tokens_total / seconds if seconds > 0 else 0.0, peak_memory_mb(),
        model_dir, unwrapped,
    )


def _micro_batch(
    method: Method, data: TrainData, micro_index: int, batch_size: int, world: int, rank: int, seed: int,
    retain_batch_size: Optional[int] = None, forget_order: Optional[Callable[[int], np.ndarray]] = None,
):
    """This process's share of micro-batch ``micro_index``.

    Every process builds the same global groups (same seeded choices) and takes every
    ``world``-th row of each, so the mean loss over processes equals the single-process loss on
    the global batch whenever group sizes divide by the number of processes. ``forget_order``
    gives each epoch's forget order (``train.group_by_length``); default: a seeded permutation.
    """
    global_size = batch_size * world
    forget_positions = stream_indices(len(data.forget), seed, micro_index * global_size, global_size, forget_order)
    forget = [data.forget[i] for i in forget_positions]
    retain = None
    if data.retain is not None:
        retain_size = (retain_batch_size or batch_size) * world
        retain = [data.retain[i] for i in stream_indices(len(data.retain), seed + 1, micro_index * retain_size, retain_size)]
    rng = np.random.default_rng([seed, 7, micro_index])
    groups = method.build_batch(forget, retain, BatchContext(rng=rng, random_answers=data.random_answers))
    return {name: rows[rank::world] if rows else rows for name, rows in groups.items()}


def make_accelerator(
    precision: str | PrecisionChoice = "auto", log_with: Sequence[str] = (), logging_dir: Optional[Path] = None
):
    """An ``Accelerator`` with ``precision`` ('auto', 'fp32' or 'bf16', see ``choose_precision``;
    or a choice already made), and the experiment trackers ``log_with`` writing under
    ``logging_dir`` (``train.report_to``; checked by ``trackers.check_trackers``).

    accelerate keeps one state per process and silently reuses the first run's mixed precision
    (or refuses another). A single process that trains twice (a demo that fine-tunes then
    unlearns, a comparison of methods, a test suite) must get each run's own precision, so the
    state is reset there; under a launcher the processes' shared state is left alone.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import ProjectConfiguration

    mixed = precision.mixed if isinstance(precision, PrecisionChoice) else choose_precision(precision)
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    shared = AcceleratorState._shared_state
    if shared and shared.get("_mixed_precision") != mixed and not distributed:
        AcceleratorState._reset_state()
    tracking: dict[str, Any] = {}
    if log_with:
        folder = str(logging_dir) if logging_dir is not None else None
        tracking = {"log_with": list(log_with), "project_config": ProjectConfiguration(project_dir=folder, logging_dir=folder)}
    return Accelerator(mixed_precision=mixed, cpu=not torch.cuda.is_available(), **tracking)


def _backward_term_by_term(accelerator, method: Method, model, batch, reference, accum: int) -> dict[str, float]:
    """Backpropagate each loss term as soon as the method yields it.

    The gradient is that of the summed loss, but only one example group's activations and
    logits are alive at a time instead of all of them. Returns the logged parts with ``total``;
    a non-finite term stops before its backward pass (the caller then raises).
    """
    parts: dict[str, float] = {}
    total = 0.0
    terms = iter(method.terms(model, batch, reference))
    while True:
        with accelerator.autocast():  # the forward passes run inside next()
            term = next(terms, None)
        if term is None:
            break
        value = term.value.item()
        parts[term.name] = value
        parts.update(term.extra)
        total += term.weight * value
        if not math.isfinite(value):
            break
        if term.value.requires_grad and term.weight != 0:
            accelerator.backward(term.weight * term.value / accum)
    parts["total"] = total
    return parts


def _clip(accelerator, params, max_norm: float) -> float:
    if max_norm > 0:
        return float(accelerator.clip_grad_norm_(params, max_norm))
    grads = [p.grad.detach().norm() for p in params if p.grad is not None]
    return float(torch.norm(torch.stack(grads))) if grads else 0.0


def _mean_across(accelerator, parts: dict[str, float]) -> dict[str, float]:
    if accelerator.num_processes == 1:
        return parts
    keys = sorted(parts)
    values = accelerator.reduce(torch.tensor([parts[k] for k in keys], device=accelerator.device), "mean")
    return dict(zip(keys, values.tolist()))


def _diverged(
    run_dir: Path, step: int, parts: dict[str, float], *, method: str, total_steps: int, is_main: bool
) -> TrainingDiverged:
    """Write train_summary.json for a run stopped by a non-finite loss or gradient at ``step`` and
    return the error to raise; both name the last checkpoint known to hold finite-loss weights.

    The checkpoint of step K holds the weights after step K's update; their loss is first measured
    at step K+1. So the checkpoint of the step just before the divergence holds the very weights
    the non-finite value came from (and resuming from it, bit-identical, repeats it); only the
    checkpoints up to two steps before are known good."""
    checkpoints = run_dir / "checkpoints"
    saved = ckpt.list_checkpoints(checkpoints)
    good = [(k, path) for k, path in saved if k <= step - 2]
    last_good = good[-1] if good else None
    bad = [path for k, path in saved if k >= step - 1]
    if is_main:
        with storing("train_summary.json", run_dir):
            atomic_write_json(run_dir / "train_summary.json", {
                "method": method,
                "steps": step - 1,
                "total_steps": total_steps,
                "stop_reason": "diverged",
                "diverged_at_step": step,
                "non_finite": {k: v if math.isfinite(v) else str(v) for k, v in parts.items()},
                "last_finite_checkpoint_step": last_good[0] if last_good else None,
                "last_finite_checkpoint": str(last_good[1].relative_to(run_dir)) if last_good else None,
            })
    shown = ", ".join(f"{k}={v:.4g}" for k, v in parts.items())
    if last_good:
        kept = f"the last checkpoint with finite-loss weights is {last_good[1]} (step {last_good[0]})"
    else:
        kept = "no checkpoint with finite-loss weights was saved before it"
    if bad:
        kept += (
            f"; {bad[0]} holds the weights step {step} started from, not good ones: remove it before --resume, "
            "which takes the latest checkpoint"
        )
    return TrainingDiverged(
        f"the loss became non-finite at step {step} ({shown}); stopped, {kept}. Lower train.lr or set train.max_grad_norm"
    )


def _check_resume_config(run_dir: Path, config: RunConfig) -> None:
    import yaml

    saved_path = run_dir / "config.yaml"
    if not saved_path.exists():
        raise UserError(f"cannot resume: {saved_path} does not exist")
    saved = yaml.safe_load(saved_path.read_text())
    current = yaml.safe_load(config.to_yaml())
    try:  # a folder saved by an earlier version lacks settings added since: fill in their defaults
        saved = yaml.safe_load(type(config).model_validate(saved).to_yaml())
    except Exception:  # noqa: BLE001 - an unreadable saved config is compared as it is (and differs)
        pass
    for config_dict in (saved, current):  # trackers only watch a run: a resume may add or drop them
        if isinstance(config_dict, dict) and isinstance(config_dict.get("train"), dict):
            config_dict["train"].pop("report_to", None)
    for section in current:
        if saved.get(section) != current[section]:
            raise UserError(
                f"cannot resume {run_dir}: section '{section}' differs from its config.yaml; resume with the same config"
            )


def _truncate_log(path: Path, step: int) -> None:
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if _logged_step(line) <= step]
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def _logged_step(line: str) -> float:
    """The step of a log line; a line torn by a kill mid-append (or blank) counts as past every step."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf


def save_final_model(model: torch.nn.Module, tokenizer, folder: Path, *, merge: bool) -> Path:
    """Save a model loadable by transformers (or an adapter loadable by peft), atomically."""
    import shutil

    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    to_save = model
    if merge and hasattr(model, "merge_and_unload"):
        to_save = copy.deepcopy(model).merge_and_unload()
    try:
        to_save.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    except BaseException:  # a full disk mid-save: no half-written copy left beside the run
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


@contextmanager
def storing(what: str, folder: Path):
    """A failed write of ``what`` (a full disk, a quota, a file size limit) becomes the one-line
    ``StorageError`` naming ``folder`` (exit 4), as a failed checkpoint does, not a traceback."""
    from safetensors import SafetensorError

    try:
        yield
    except (OSError, SafetensorError) as err:  # safetensors reports a failed write as its own error
        text = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        full = isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
        text = (err.strerror or text) if isinstance(err, OSError) else text
        hint = f"free space in {folder}" if full else f"check that {folder} is writable and has free space"
        raise StorageError(
            f"could not write {what} in {folder} ({text}); {hint}, then rerun with --resume to continue from the last "
            "checkpoint, or --overwrite"
        ) from None


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _progress(enabled: bool, total: int, done: int):
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    bar = Progress(
        TextColumn("[bold]training"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    task = bar.add_task("train", total=total, completed=done, loss=float("nan"))
    bar.start()
    return bar, task
