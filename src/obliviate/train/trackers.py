"""Experiment trackers (``train.report_to``): accelerate's TensorBoard, Weights & Biases and MLflow
trackers get the run's resolved config once and every ``train_log.jsonl`` record as it is written.

A tracker whose package is missing is refused before anything is loaded or created, rather than
skipped with a warning (accelerate's own behaviour), so a run never silently logs nowhere.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

from obliviate.config import RunConfig
from obliviate.errors import UserError

#: Per tracker: the packages any one of which makes it work, and the one to install.
TRACKER_PACKAGES: dict[str, tuple[tuple[str, ...], str]] = {
    "tensorboard": (("tensorboard", "tensorboardX"), "tensorboard"),
    "wandb": (("wandb",), "wandb"),
    "mlflow": (("mlflow",), "mlflow"),
}


def trackers_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "trackers"


def check_trackers(config: RunConfig) -> list[str]:
    """The trackers ``train.report_to`` names, or a one-line ``UserError`` for one whose package is
    not installed (or that obliviate does not wire)."""
    wanted = list(config.train.report_to)
    line = config._lines.get(("train", "report_to"))
    where = f"{config._source}:{line}: " if line else ""
    for name in wanted:
        if name not in TRACKER_PACKAGES:
            raise UserError(f"{where}train.report_to: unknown tracker {name!r}; valid: {', '.join(TRACKER_PACKAGES)}")
        modules, package = TRACKER_PACKAGES[name]
        if not any(importlib.util.find_spec(module) is not None for module in modules):
            raise UserError(f"{where}train.report_to: {name} needs `pip install {package}`")
    return wanted


def init_kwargs(run_dir: Path, run_name: str) -> dict[str, dict[str, Any]]:
    """Keyword arguments per tracker that keep each one's local files inside ``<run>/trackers/``."""
    folder = trackers_dir(run_dir)
    return {
        "wandb": {"dir": str(folder), "name": run_name},
        "mlflow": {"logging_dir": str(folder / "mlflow-artifacts"), "run_name": run_name},
    }


def point_mlflow_at(run_dir: Path) -> None:
    """MLflow's tracking store defaults to ``./mlruns`` in the working directory; unless the user
    chose one (MLFLOW_TRACKING_URI), the run's own trackers folder holds it."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return
    import mlflow

    mlflow.set_tracking_uri((trackers_dir(run_dir) / "mlruns").resolve().as_uri())


def flat_config(config: RunConfig) -> dict[str, Any]:
    """The resolved config as ``section.key`` -> scalar: TensorBoard's hyperparameters and MLflow's
    params take only scalars, so lists, mappings and nulls become their JSON text."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        elif isinstance(value, (bool, int, float, str)):
            out[prefix] = value
        else:
            out[prefix] = json.dumps(value)

    walk("", config.model_dump(mode="json"))
    return out


def finish_trackers(accelerator) -> None:
    """Close every tracker (flushes TensorBoard's event files, ends a W&B or MLflow run).

    Not ``accelerator.end_training()``: that also destroys the process group, which callers that
    evaluate after training under a launcher still need. Safe to call on a failure path and twice."""
    trackers, accelerator.trackers = list(getattr(accelerator, "trackers", [])), []
    for tracker in trackers:
        tracker.finish()
