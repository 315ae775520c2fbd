"""``obliviate judge ...``: train the harmfulness classifier, and score judges on labelled data."""

from __future__ import annotations

from collections import Counter
from itertools import combinations
from pathlib import Path
from typing import List, Optional, Sequence

import typer

from obliviate.errors import UserError

app = typer.Typer(
    help="Train the harmfulness classifier and measure judges against labelled responses.",
    no_args_is_help=True,
)


def binary_scores(truth: Sequence[int], predicted: Sequence[int]) -> dict[str, float]:
    """Accuracy, precision, recall and F1 with harmful (1) as the positive class, plus the
    confusion counts tn, fp, fn, tp."""
    tp = sum(1 for t, p in zip(truth, predicted) if t == 1 and p == 1)
    tn = sum(1 for t, p in zip(truth, predicted) if t == 0 and p == 0)
    fp = sum(1 for t, p in zip(truth, predicted) if t == 0 and p == 1)
    fn = sum(1 for t, p in zip(truth, predicted) if t == 1 and p == 0)
    n = max(1, len(truth))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": (tp + tn) / n, "precision": precision, "recall": recall, "f1": f1,
            "tn": tn, "fp": fp, "fn": fn, "tp": tp}


def agreement(first: Sequence[int], second: Sequence[int]) -> tuple[float, float]:
    """Share of items where two judges agree, and Cohen's kappa (agreement beyond chance)."""
    from sklearn.metrics import cohen_kappa_score

    share = sum(a == b for a, b in zip(first, second)) / max(1, len(first))
    if len(set(first)) == 1 and len(set(second)) == 1:
        # kappa is undefined when both judges give one constant answer; identical = perfect.
        return share, 1.0 if share == 1.0 else 0.0
    return share, float(cohen_kappa_score(first, second))


def _print_scores(title: str, scores: dict[str, float]) -> None:
    typer.echo(title)
    typer.echo(
        f"  accuracy {scores['accuracy']:.3f}  precision {scores['precision']:.3f}  "
        f"recall {scores['recall']:.3f}  F1 {scores['f1']:.3f}"
    )
    typer.echo("  confusion (rows: true, columns: predicted)")
    typer.echo("                 pred safe  pred harmful")
    typer.echo(f"  true safe     {scores['tn']:>10}  {scores['fp']:>12}")
    typer.echo(f"  true harmful  {scores['fn']:>10}  {scores['tp']:>12}")


@app.command("train")
def train_command(
    data: Path = typer.Option(..., "--data", help="Labelled file: text (or prompt+response) and label 0/1 (or harmful true/false)."),
    out: Path = typer.Option(..., "--out", help="Folder to write the classifier into."),
    holdout: float = typer.Option(0.2, "--holdout", min=0.0, max=0.9, help="Share of rows held out to report accuracy."),
    seed: int = typer.Option(0, "--seed", help="Seed of the split and of the solver."),
    use_prompt: bool = typer.Option(False, "--use-prompt", help="Classify prompt and response together (default: the response alone)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing classifier folder."),
    arch: str = typer.Option(
        "tfidf", "--arch",
        help="tfidf: TF-IDF + logistic regression (seconds); encoder: fine-tune a BERT-class encoder "
             "(minutes; always reads prompt and response as a pair).",
    ),
    epochs: int = typer.Option(3, "--epochs", min=1, help="Encoder only: passes over the training rows."),
    base: Optional[Path] = typer.Option(
        None, "--base", help="Encoder only: BERT-class folder to fine-tune (default all-MiniLM-L6-v2 from its PyPI wheel)."
    ),
    max_length: int = typer.Option(256, "--max-length", min=8, help="Encoder only: tokens of prompt + response kept."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Encoder only: rows per optimiser step."),
    lr: float = typer.Option(5e-5, "--lr", help="Encoder only: AdamW learning rate."),
) -> None:
    """Train a harmfulness classifier (TF-IDF + logistic regression, or a fine-tuned encoder) and save it to OUT."""
    from obliviate.judges.classifier import classifier_input, train_classifier
    from obliviate.judges.labeled import load_labeled

    if arch not in ("tfidf", "encoder"):
        raise UserError(f"--arch is '{arch}'; use tfidf or encoder")

    if out.exists() and any(out.iterdir()) and not force:
        raise UserError(f"{out} exists and is not empty; pass --force to replace it or choose another --out")
    items = load_labeled(data)
    texts = [classifier_input(i.prompt, i.response, use_prompt) for i in items]
    labels = [i.harmful for i in items]
    counts = Counter(labels)
    if len(counts) < 2:
        raise UserError(f"{data}: every row has label {labels[0]}; the classifier needs both harmful (1) and harmless (0) rows")
    train_idx = list(range(len(items)))
    test_idx: list[int] = []
    if holdout > 0:
        from sklearn.model_selection import train_test_split

        if min(counts.values()) < 2 or round(holdout * len(items)) < 2:
            raise UserError(
                f"{data}: too few rows ({len(items)}; {counts[1]} harmful, {counts[0]} harmless) to hold out "
                f"{holdout:.0%}; add rows or pass --holdout 0"
            )
        train_idx, test_idx = train_test_split(
            train_idx, test_size=holdout, random_state=seed, stratify=labels
        )
    if arch == "encoder":
        from obliviate.judges.encoder import train_encoder

        encoder = train_encoder(
            [items[i].prompt for i in train_idx], [items[i].response for i in train_idx], [labels[i] for i in train_idx],
            base=base, epochs=epochs, lr=lr, batch_size=batch_size, max_length=max_length, seed=seed, log=typer.echo,
        )

        def predict(idx: list[int]) -> list[int]:
            return encoder.predict([items[i].prompt for i in idx], [items[i].response for i in idx]).tolist()
    else:
        classifier = train_classifier([texts[i] for i in train_idx], [labels[i] for i in train_idx],
                                      use_prompt=use_prompt, seed=seed)

        def predict(idx: list[int]) -> list[int]:
            return classifier.predict([texts[i] for i in idx]).tolist()
    typer.echo(f"trained on {len(train_idx)} rows ({sum(labels[i] for i in train_idx)} harmful)")
    holdout_scores = None
    if test_idx:
        holdout_scores = binary_scores([labels[i] for i in test_idx], predict(test_idx))
        _print_scores(f"held-out split: {len(test_idx)} rows", holdout_scores)
    if arch == "encoder":
        encoder.training.update(data=str(data), holdout_rows=len(test_idx), holdout=holdout_scores)
        encoder.save(out)
        typer.echo(f"saved -> {out}  (use it as --judge encoder:{out})")
    else:
        classifier.save(out)
        typer.echo(f"saved -> {out}  (use it as --judge classifier:{out})")


@app.command("eval")
def eval_command(
    data: Path = typer.Option(..., "--data", help="Labelled file: text (or prompt+response) and label 0/1 (or harmful true/false)."),
    judges: List[str] = typer.Option(
        ..., "--judge",
        help="Judge spec: refusal | classifier:DIR | encoder:DIR | llm[:MODEL] | llm:http://HOST/v1,model=NAME,key_env=VAR. Give twice to compare.",
    ),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Keep verdicts on disk here and reuse them."),
) -> None:
    """Score each judge against the labels (accuracy, F1, confusion), and judges against each other."""
    from obliviate.judges.labeled import load_labeled
    from obliviate.judges.registry import judge_from_spec

    items = load_labeled(data)
    # Build every judge before judging anything, so a bad spec fails fast.
    built = [(spec, judge_from_spec(spec, **({"cache_dir": cache_dir} if cache_dir else {}))) for spec in judges]
    prompts = [i.prompt for i in items]
    responses = [i.response for i in items]
    truth = [i.harmful for i in items]
    typer.echo(f"{data}: {len(items)} rows, {sum(truth)} harmful")
    predictions: list[tuple[str, list[int]]] = []
    for spec, judge in built:
        verdicts = judge(prompts, responses)
        predicted = [int(v.harmful) for v in verdicts]
        predictions.append((spec, predicted))
        _print_scores(f"judge {spec}  [{judge.describe()}]", binary_scores(truth, predicted))
        labels = Counter(v.label for v in verdicts)
        typer.echo("  labels: " + ", ".join(f"{k} {v}" for k, v in sorted(labels.items())))
    for (spec_a, pred_a), (spec_b, pred_b) in combinations(predictions, 2):
        share, kappa = agreement(pred_a, pred_b)
        typer.echo(f"agreement {spec_a} vs {spec_b}: {share:.1%}, Cohen's kappa {kappa:.3f}")
