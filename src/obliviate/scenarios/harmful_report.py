"""The harmful suite's report: before/after table, plots and side-by-side answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from obliviate.report import Section, write_report
from obliviate.report import plots


def _examples(before: dict, after: dict, split: str, count: int, harmful_prompts: bool) -> list[dict[str, Any]]:
    out = []
    for old, new in list(zip(before["items"].get(split, []), after["items"].get(split, [])))[:count]:
        def cls(row):
            if row["degenerate"]:
                return "warn"
            if harmful_prompts:
                return "bad" if row["harmful"] else "good"
            return "bad" if row["refusal"] else "good"  # refusing a benign prompt is the failure here

        out.append({
            "split": split, "prompt": old["prompt"], "before": old["response"], "after": new["response"],
            "before_label": old["label"], "after_label": new["label"],
            "before_class": cls(old), "after_class": cls(new),
        })
    return out


def write_harmful_report(run_dir: Path, before: dict, after: dict, summary: dict, config: Any) -> Path:
    run_dir = Path(run_dir)
    plot_dir = run_dir / "plots"
    b, a = before["metrics"], after["metrics"]
    made = [plots.bar_before_after(
        {
            "harmful: unlearned": (b["unlearned"]["harmful_rate"], a["unlearned"]["harmful_rate"]),
            "harmful: unseen": (b["unseen"]["harmful_rate"], a["unseen"]["harmful_rate"]),
            "degenerate: unseen": (b["unseen"]["degenerate_rate"], a["unseen"]["degenerate_rate"]),
            "over-refusal: benign": (b["benign"]["refusal_rate"], a["benign"]["refusal_rate"]),
            **({"on-topic: benign": (b["benign"]["on_topic_rate"], a["benign"]["on_topic_rate"])}
               if "on_topic_rate" in b["benign"] else {}),
        },
        plot_dir / "rates_before_after.png",
        "Harmful-response unlearning: rates before and after",
    )]
    log_path = run_dir / "unlearn" / "train_log.jsonl"
    if log_path.exists():
        made.append(plots.loss_curves(log_path, plot_dir / "loss_curves.png", "Unlearning losses"))
    similarity = [row.get("similarity", float("nan")) for row in after["items"].get("benign", [])]
    if similarity:
        made.append(plots.histogram(
            {"benign answers after vs original": similarity}, plot_dir / "similarity.png",
            "Similarity of benign answers to the original model's", "ROUGE-L F1",
        ))
    if after.get("on_topic"):
        made.append(plots.histogram(
            {
                "benign, before": [r["on_topic_cosine"] for r in before["items"]["benign"]],
                "benign, after": [r["on_topic_cosine"] for r in after["items"]["benign"]],
                "unseen harmful, after": [r["on_topic_cosine"] for r in after["items"]["unseen"]],
            },
            plot_dir / "on_topic.png", "Prompt-answer cosine (all-MiniLM-L6-v2)", "cosine",
            threshold=after["on_topic"]["threshold"], threshold_label="on-topic threshold",
        ))
    sections = [
        Section(
            title="How to read this",
            text=(
                "Harmful rate: share of answers the judge calls compliant with a harmful request. "
                "'unlearned' prompts were in the forget set; 'unseen' prompts were held out and show whether "
                "the model generalised.\n\n"
                "A degenerate answer (empty, looping or non-language) is not harmful, but it is not success either, "
                "so it is counted separately. Over-refusal is the share of benign prompts refused; on-topic rate is "
                "the share of benign answers whose embedding is close to the prompt's (an answer about something else "
                "is a broken model even when no judge calls it harmful)."
            ),
        ),
        Section(title="Held-out harmful prompts (unseen)", examples=_examples(before, after, "unseen", 8, True)),
        Section(title="Benign prompts", examples=_examples(before, after, "benign", 8, False)),
        Section(title="Forget set prompts (unlearned)", examples=_examples(before, after, "unlearned", 4, True)),
        Section(title="Timings (s)", rows=[{"stage": k, "seconds": v} for k, v in summary["timings_s"].items()]),
    ]
    return write_report(
        run_dir,
        title="Harmful-response unlearning",
        summary_rows=[{k: r[k] for k in ("metric", "split", "before", "after", "note")} for r in summary["rows"]],
        sections=sections,
        plots=made,
        meta={
            "model": summary["options"].get("model") or "smollm2-135m-instruct",
            "method": summary["options"]["method"],
            "judge": summary["judge"],
            "forget set": f"{summary['forget_set_size']} flagged dialogues",
            "unseen harmful-rate reduction": f"{100 * summary['unseen_harmful_reduction']:.0f}%",
            "config": config.model_dump(mode="json") if hasattr(config, "model_dump") else config,
        },
    )
