"""Fine-tuning runs: plain supervised fine-tuning through the same training loop.

It makes the models unlearning starts from or is compared with: a model that memorised a book
(the copyright scenario), the "full" model fine-tuned on everything, the "retain" model
fine-tuned on the retain set only. The method is ``finetune`` (NLL on the responses of
``data.forget``, the loop's slot for "the set this run is about").

Defaults follow the papers' fine-tuning stage (Yao et al. 2023; Gundavarapu et al. 2024): LoRA r 16,
alpha 32, dropout 0.05, lr 2e-4, 3 epochs, weight decay 0.1, warmup 100 steps. Warmup is scaled
for short runs: when the config does not set ``train.warmup_steps``, it is
``min(100, ceil(0.1 * total steps))`` (100 steps is under a tenth of the papers' runs, so short
runs keep the same warm-up share instead of spending most of their steps warming up).
``--full`` trains every weight instead, at lr 2e-5 unless the config sets one (2e-4 on all
weights of a small model overshoots).

Data: ``--data FILE`` (prompt/response pairs in JSONL/JSON/CSV/Parquet, or a .txt/.md book cut
into prefix/continuation pairs), ``--book synthetic`` (the generated novel) or ``--public-domain
WORK`` (e.g. milton). With ``--block-size N`` a book is instead packed into blocks of N tokens
(the model's tokenizer; EOS after each passage) and trained as raw text with loss on every
token (``data.template: text``), as language-model fine-tuning on a book is usually done.
Pairs and blocks made from a book are written once to ``$OBLIVIATE_HOME/data/books/`` so the
run's ``config.yaml`` points at a real file.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Optional

from obliviate.config import RunConfig, apply_overrides, load_config, read_yaml_mapping
from obliviate.data.books import book_blocks_file, book_pairs_file
from obliviate.errors import UserError
from obliviate.train.run_dir import check_run_dir, config_inputs, holds_a_run, is_first_rank

#: The papers' LoRA fine-tuning recipe (batch size is ours: small enough for a CPU).
PAPER_FINETUNE_DEFAULTS: dict[str, Any] = {
    "run": {"name": "finetune"},
    "method": {"name": "finetune"},
    "data": {"template": "plain", "max_length": 512},
    "train": {
        "lr": 2e-4,
        "epochs": 3,
        "batch_size": 4,
        "weight_decay": 0.1,
        "save_every": 0,
        "lora": {"enabled": True, "r": 16, "alpha": 32, "dropout": 0.05},
    },
}
PAPER_WARMUP_STEPS = 100
FULL_FINETUNE_LR = 2e-5


def deep_merge(base: dict, update: dict) -> dict:
    """``base`` with ``update`` laid over it, nested mappings merged key by key (inputs untouched)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def scaled_warmup(total_steps: int, paper_steps: int = PAPER_WARMUP_STEPS) -> int:
    """Warm-up steps for a run of ``total_steps``: the papers' 100, or a tenth of a shorter run."""
    return min(paper_steps, math.ceil(0.1 * total_steps))


def finetune_config(
    data_path: str | Path,
    *,
    config_path: str | Path | None = None,
    overrides: Optional[list[str]] = None,
    full: bool = False,
    n_examples: int | None = None,
) -> RunConfig:
    """The validated run config of a fine-tuning run.

    Layers, last wins: the papers' defaults, ``--full`` (LoRA off, lr 2e-5), the YAML at
    ``config_path``, then ``key=value`` overrides; ``data.forget.path`` is ``data_path`` unless
    the config names one. With ``n_examples`` and no explicit ``train.warmup_steps``, warm-up is
    :func:`scaled_warmup` of the run's length.
    """
    layers = copy.deepcopy(PAPER_FINETUNE_DEFAULTS)
    if full:
        layers = deep_merge(layers, {"train": {"lr": FULL_FINETUNE_LR, "lora": {"enabled": False}}})
    user: dict = {}
    if config_path is not None:
        user, _ = read_yaml_mapping(Path(config_path))
    user = apply_overrides(copy.deepcopy(user), list(overrides or []))
    merged = deep_merge(layers, user)
    forget = merged.setdefault("data", {}).setdefault("forget", {})
    if isinstance(forget, dict) and "path" not in forget:
        forget["path"] = str(data_path)
    method = merged.get("method", {})
    if isinstance(method, dict) and method.get("name", "finetune") != "finetune":
        raise UserError(f"method.name is '{method.get('name')}'; `obliviate finetune` trains method 'finetune' only "
                        "(use `obliviate unlearn` for unlearning methods)")
    # load_config re-validates everything and names the field of any problem; the YAML's own line
    # numbers are lost in the merge, so errors are reported against the merged config.
    config = load_config(None, [], data=merged)
    if config_path is not None:
        config._base_dir = Path(config_path).parent
    explicit_warmup = "warmup_steps" in (user.get("train") or {})
    if n_examples is not None and not explicit_warmup:
        from obliviate.train.loop import total_steps

        config.train.warmup_steps = scaled_warmup(total_steps(config, n_examples, 1))
    return config


def run_finetune(
    run_dir: str | Path,
    *,
    data: str | Path | None = None,
    book: str | None = None,
    public_domain: str | None = None,
    config: str | Path | None = None,
    overrides: Optional[list[str]] = None,
    full: bool = False,
    prefix_chars: int = 200,
    block_size: int | None = None,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
    log=print,
):
    """Fine-tune a model (LoRA by default) and write a run folder; returns the ``TrainResult``.

    Exactly one data source: ``data`` (a pairs file, or a .txt/.md book), ``book="synthetic"`` or
    ``public_domain`` (e.g. "milton"). ``block_size`` packs a book into token blocks trained as
    raw text instead of prefix/continuation pairs. Every input is validated before the model loads.
    """
    from obliviate.methods import build_method
    from obliviate.train.loop import load_train_data, run_training

    sources = [s for s in (data, book, public_domain) if s is not None]
    if len(sources) != 1:
        raise UserError("give exactly one data source: --data FILE, --book synthetic or --public-domain WORK")
    if overwrite and resume:
        raise UserError("--overwrite and --resume exclude each other")
    is_book = data is None or Path(data).suffix.lower() in (".txt", ".md")
    if block_size is not None:
        if not is_book:
            raise UserError(f"--block-size packs a book (--book, --public-domain or a .txt/.md --data); {data} is a pairs file")
        if block_size < 8:
            raise UserError(f"--block-size must be at least 8 tokens, got {block_size}")
        if data is not None and not Path(data).is_file():
            raise UserError(f"--data: book file {data} does not exist")
        from obliviate.models.loading import load_tokenizer

        model_name = finetune_config("unused", config_path=config, overrides=overrides, full=full).model.name
        tokenizer = load_tokenizer(model_name)
        data_path: Path | str = book_blocks_file(
            tokenizer, model_name, block_size, book=book, public_domain=public_domain, text_file=data
        )
        # Re-tokenising a decoded block can merge differently at its edges: leave a little room.
        overrides = ["data.template=text", f"data.max_length={block_size + 16}", *(overrides or [])]
    elif data is not None and Path(data).suffix.lower() in (".txt", ".md"):
        data_path = book_pairs_file(text_file=data, prefix_chars=prefix_chars)
    elif data is not None:
        data_path = Path(data)
        if not data_path.exists():
            raise UserError(f"--data: data file {data_path} does not exist")
        data_path = data_path.resolve()
    else:
        data_path = book_pairs_file(book=book, public_domain=public_domain, prefix_chars=prefix_chars)
    probe = finetune_config(data_path, config_path=config, overrides=overrides, full=full)
    method = build_method(probe.method.name, probe.method.options())
    train_data = load_train_data(probe, method)
    cfg = finetune_config(data_path, config_path=config, overrides=overrides, full=full, n_examples=len(train_data.forget))
    target = Path(run_dir) if run_dir is not None else Path(cfg.run.output_dir) / cfg.run.name
    check_run_dir(target, inputs=config_inputs(cfg), resume=resume)
    if is_first_rank() and holds_a_run(target) and not (overwrite or resume):
        raise UserError(f"run folder {target} already exists; pass --overwrite to replace it or --resume to continue it")
    log(
        f"fine-tuning {cfg.model.name} on {len(train_data.forget)} pairs from {data_path} "
        f"({'LoRA r=%d' % cfg.train.lora.r if cfg.train.lora.enabled else 'all weights'}, lr {cfg.train.lr:g}, "
        f"warm-up {cfg.train.warmup_steps} steps)"
    )
    return run_training(
        cfg, target, resume=resume, overwrite=overwrite, method=method, data=train_data, progress=progress, log=log
    )
