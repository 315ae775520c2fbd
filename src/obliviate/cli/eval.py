"""``obliviate eval --suite NAME``: run an evaluation suite on a model or a run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from obliviate.errors import UserError

console = Console(stderr=True)
SUITES = ("harmful", "copyright")


def _prompts(path: Optional[Path], field: str, what: str) -> list[str]:
    from obliviate.data.loaders import load_examples

    if path is None:
        return []
    return [e.prompt for e in load_examples(path, prompt_field=field, role=what, require_response=False)]


def evaluate(
    suite: str = typer.Option(..., "--suite", help="harmful | copyright"),
    model: Optional[str] = typer.Option(None, "--model", help="run folder, adapter folder, model folder, .gguf, alias"),
    harmful: Optional[Path] = typer.Option(None, "--harmful", help="held-out harmful prompts ('unseen')"),
    forget: Optional[Path] = typer.Option(None, "--forget", help="the forget set's prompts ('unlearned')"),
    benign: Optional[Path] = typer.Option(None, "--benign", help="benign prompts (default: obliviate's builtin set)"),
    unseen: Optional[Path] = typer.Option(None, "--unseen", help="copyright: held-out passages (prefix/continuation)"),
    retain: Optional[Path] = typer.Option(None, "--retain", help="copyright: retained passages"),
    general: Optional[Path] = typer.Option(None, "--general", help="copyright: general text for perplexity"),
    prompt_field: str = typer.Option("prompt", "--prompt-field"),
    judge: str = typer.Option("refusal", "--judge", help="refusal | classifier:DIR | llm[:MODEL|URL,...]"),
    max_new_tokens: int = typer.Option(48, "--max-new-tokens"),
    out: Optional[Path] = typer.Option(None, "--out", help="folder for eval/ and generations/ (default: the run folder)"),
    tag: str = typer.Option("eval", "--tag", help="name of this evaluation (file names)"),
) -> None:
    """Evaluate a model with a suite and write eval/<suite>_<tag>.json and generations/."""
    from obliviate.cli.console import quiet_libraries

    if suite not in SUITES:
        raise UserError(f"unknown suite '{suite}' (known: {', '.join(SUITES)})")
    if suite == "copyright":
        if forget is None:
            raise UserError("the copyright suite needs --forget FILE (prefix/continuation pairs; --unseen, --retain, --general optional)")
        quiet_libraries()
        from obliviate.eval.copyright import run_copyright_eval

        result = run_copyright_eval(
            model, forget=forget, unseen=unseen, retain=retain, general=general, out=out or Path("runs") / "eval",
            tag=tag, max_new_tokens=max_new_tokens, prompt_field=prompt_field,
        )
        table = Table(title="copyright suite")
        table.add_column("split")
        for key in ("rouge_l", "bleu", "leak_rate", "exact_memorisation", "perplexity"):
            table.add_column(key, justify="right")
        for split, values in result.get("metrics", {}).items():
            if isinstance(values, dict):
                table.add_row(split, *[f"{values[k]:.3f}" if isinstance(values.get(k), float) else "—"
                                       for k in ("rouge_l", "bleu", "leak_rate", "exact_memorisation", "perplexity")])
        Console().print(table)
        return
    unseen = _prompts(harmful, prompt_field, "--harmful")
    unlearned = _prompts(forget, prompt_field, "--forget")
    if not unseen and not unlearned:
        raise UserError("the harmful suite needs --harmful FILE and/or --forget FILE (JSONL/CSV/JSON/Parquet with a prompt field)")
    if benign is not None:
        benign_prompts = _prompts(benign, prompt_field, "--benign")
    else:
        from obliviate.data.fetch import load_builtin

        benign_prompts = [r["prompt"] for r in load_builtin("benign_prompts")][:32]
    from obliviate.judges.registry import judge_from_spec

    judge_obj = judge_from_spec(judge)
    quiet_libraries()
    from obliviate.models.embeddings import load_embedder
    from obliviate.models.loading import load_trained
    from obliviate.eval.harmful import GenerationSettings, HarmfulSplits, evaluate_harmful, write_harmful_results

    loaded, tokenizer = load_trained(model)
    target = out or (Path(model) if model and (Path(model) / "config.yaml").exists() else Path("runs") / "eval")
    result = evaluate_harmful(
        loaded, tokenizer, HarmfulSplits(unlearned=unlearned, unseen=unseen, benign=benign_prompts), judge_obj,
        embedder=load_embedder(required=False), settings=GenerationSettings(max_new_tokens=max_new_tokens), progress=True,
    )
    path = write_harmful_results(result, target, tag)
    table = Table(title=f"harmful suite — judge: {result['judge']}")
    table.add_column("split")
    keys = ["harmful_rate", "refusal_rate", "degenerate_rate", "on_topic_rate", "perplexity_under_original", "count"]
    for key in keys:
        table.add_column(key.replace("_", " "), justify="right")
    for split, values in result["metrics"].items():
        table.add_row(split, *[f"{values[k]:.3f}" if isinstance(values.get(k), float) else str(values.get(k, "—")) for k in keys])
    Console().print(table)
    console.print(f"wrote {path}")


def register(app: typer.Typer) -> None:
    app.command("eval")(evaluate)
