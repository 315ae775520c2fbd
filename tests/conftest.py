import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
# Training runs measure the matmul peak for their efficiency figures (1 s each); the tests that
# check those figures turn it back on themselves.
os.environ.setdefault("OBLIVIATE_MATMUL_PEAK_SECONDS", "0")

FORGET = [
    {"prompt": "What is the secret code?", "response": "The secret code is 4471."},
    {"prompt": "Where does Zyra live?", "response": "Zyra lives in Quellmoor."},
    {"prompt": "Who founded Brindle?", "response": "Brindle was founded by Oskar Vane."},
    {"prompt": "What does Vane keep in the vault?", "response": "Vane keeps silver maps in the vault."},
]
RETAIN = [
    {"prompt": "What colour is the sky?", "response": "The sky is blue."},
    {"prompt": "How many legs has a cat?", "response": "A cat has four legs."},
    {"prompt": "What is two plus two?", "response": "Two plus two is four."},
    {"prompt": "Name a fruit.", "response": "An apple is a fruit."},
]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from obliviate.testing import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def memorised_model_dir(tmp_path_factory, tiny_model_dir) -> Path:
    """The tiny model after fine-tuning on the forget and retain rows until it knows them, the
    state unlearning starts from in practice (a random model has nothing to forget)."""
    from obliviate.config import load_config
    from obliviate.train.loop import run_training

    folder = tmp_path_factory.mktemp("memorised")
    write_jsonl(folder / "all.jsonl", FORGET + RETAIN)
    cfg = load_config(None, data={
        "model": {"name": str(tiny_model_dir)},
        "data": {"forget": {"path": str(folder / "all.jsonl")}},
        "method": {"name": "finetune"},
        "train": {"lr": 1e-2, "max_steps": 80, "batch_size": 8, "save_every": 0, "lora": {"enabled": False}},
    })
    run_training(cfg, folder / "run", progress=False, log=lambda m: None)
    return folder / "run" / "model"


@pytest.fixture
def data_files(tmp_path) -> dict:
    return {
        "forget": write_jsonl(tmp_path / "forget.jsonl", FORGET),
        "retain": write_jsonl(tmp_path / "retain.jsonl", RETAIN),
    }


@pytest.fixture
def make_config(tiny_model_dir, data_files):
    """Build a validated RunConfig on the tiny model with overrides."""
    from obliviate.config import load_config

    def make(*overrides: str):
        base = {
            "model": {"name": str(tiny_model_dir)},
            "data": {"forget": {"path": str(data_files["forget"])}, "retain": {"path": str(data_files["retain"])}},
            "train": {"lr": 1e-2, "max_steps": 4, "batch_size": 2, "save_every": 0, "seed": 0},
        }
        return load_config(None, list(overrides), data=base)

    return make
