"""``obliviate detect``: answer prompts, judge the answers, write the forget set of flagged ones."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from obliviate.data.formatting import TEMPLATES
from obliviate.errors import UserError


def detect_command(
    prompts: Path = typer.Option(..., "--prompts", help="Prompt file (.jsonl/.json/.csv/.parquet, a datasets folder, or builtin:NAME)."),
    judge: str = typer.Option(
        ..., "--judge",
        help="Judge spec: refusal | classifier:DIR | llm[:MODEL] | reference[:FILE] | privacy[:FILE], with ,key=value options.",
    ),
    out: Path = typer.Option(..., "--out", help="Folder for forget.jsonl, retain.jsonl, summary.json."),
    model: Optional[str] = typer.Option(None, "--model", help="Model alias, folder, .gguf file or hub id (default: the default model)."),
    prompt_field: str = typer.Option("prompt", "--prompt-field", help="Field holding the prompt (TruthfulQA: Question)."),
    response_field: Optional[str] = typer.Option(
        None, "--response-field", help="Judge this field's existing answers instead of generating (existing dialogues)."
    ),
    threshold: float = typer.Option(0.5, "--threshold", min=0.0, max=1.0, help="Flag answers whose judge score is at least this."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", min=1),
    batch_size: int = typer.Option(16, "--batch-size", min=1),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Read only the first N prompts."),
    val_size: int = typer.Option(0, "--val-size", min=0, help="Hold out N flagged rows in validation.jsonl (for early stopping)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the validation draw."),
    split: str = typer.Option("train", "--split", help="Split of a datasets folder or hub id."),
    template: str = typer.Option("auto", "--template", help="auto | chat | plain | text"),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Keep judge verdicts on disk here."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier detection in --out."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code"),
) -> None:
    """Find the dialogues to unlearn: the model's answers the judge flags become DIR/forget.jsonl."""
    from obliviate.gating.detect import RESERVED, detect, load_prompt_rows, write_detection
    from obliviate.judges.registry import judge_from_spec

    if template not in TEMPLATES:
        raise UserError(f"--template must be one of {', '.join(TEMPLATES)}, got {template!r}")
    if (out / "forget.jsonl").exists() and not overwrite:
        raise UserError(f"{out} already holds a detection (forget.jsonl); pass --overwrite or choose another --out")
    # Everything the user gave is checked before a model loads.
    source = str(prompts) if str(prompts).startswith("builtin:") else prompts
    rows = load_prompt_rows(source, prompt_field=prompt_field, split=split, limit=limit)
    responses = None
    if response_field is not None:
        key = f"input_{response_field}" if response_field in RESERVED else response_field
        responses = []
        for number, row in enumerate(rows, start=1):
            value = row.get(key)
            if not isinstance(value, str):
                raise UserError(f"{prompts}: row {number}: field '{response_field}' missing or not a string (--response-field)")
            responses.append(value)
    built = judge_from_spec(judge, **({"cache_dir": cache_dir} if cache_dir else {}))

    from obliviate.cli.console import quiet_libraries

    quiet_libraries()
    lm = tok = None
    if responses is None:
        from obliviate.models.loading import load_model_and_tokenizer

        lm, tok = load_model_and_tokenizer(model, trust_remote_code=trust_remote_code)
    result = detect(
        lm, tok, rows, built, threshold=threshold, max_new_tokens=max_new_tokens, batch_size=batch_size,
        template=template, val_size=val_size, seed=seed, responses=responses, progress=True,
    )
    result.summary["model"] = (model or "default") if responses is None else None
    result.summary["prompts"] = str(prompts)
    write_detection(result, out, overwrite=overwrite)
    s = result.summary
    typer.echo(
        f"{s['flagged']} of {s['rows']} answers flagged ({s['flag_rate']:.1%}) by {s['judge']}; "
        f"labels {s['labels']}\n-> {out}/forget.jsonl ({s['forget']} rows), retain.jsonl ({s['retain']})"
        + (f", validation.jsonl ({s['validation']})" if s["validation"] else "")
    )


def register(app: typer.Typer) -> None:
    app.command("detect")(detect_command)
