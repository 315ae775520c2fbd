"""``obliviate finetune`` end to end on the tiny model, and its config layering."""

from __future__ import annotations

import json

import pytest
import typer
import yaml
from typer.testing import CliRunner

from conftest import FORGET, RETAIN, write_jsonl
from obliviate.cli import finetune as finetune_cli
from obliviate.data.books import block_rows
from obliviate.errors import UserError
from obliviate.train import finetune


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:  # a group, so the command is addressed by name as in the real CLI
        pass

    finetune_cli.register(app)
    return app


def test_scaled_warmup_keeps_a_tenth_of_short_runs():
    assert finetune.scaled_warmup(5000) == 100
    assert finetune.scaled_warmup(1000) == 100
    assert finetune.scaled_warmup(31) == 4  # ceil(3.1)
    assert finetune.scaled_warmup(1) == 1


def test_config_layers_defaults_full_yaml_and_overrides(tmp_path):
    data = write_jsonl(tmp_path / "all.jsonl", FORGET + RETAIN)
    cfg = finetune.finetune_config(data, n_examples=8)
    assert cfg.method.name == "finetune"
    assert (cfg.train.lr, cfg.train.epochs, cfg.train.weight_decay) == (2e-4, 3, 0.1)
    assert (cfg.train.lora.enabled, cfg.train.lora.r, cfg.train.lora.alpha, cfg.train.lora.dropout) == (True, 16, 32, 0.05)
    assert cfg.train.warmup_steps == 1  # 3 epochs x 8 rows / batch 4 = 6 steps -> ceil(0.6)
    full = finetune.finetune_config(data, full=True)
    assert not full.train.lora.enabled and full.train.lr == 2e-5
    recipe = tmp_path / "ft.yaml"
    recipe.write_text("train:\n  lr: 5.0e-4\n  warmup_steps: 7\n")
    cfg = finetune.finetune_config(data, config_path=recipe, overrides=["train.epochs=1"], n_examples=8)
    assert (cfg.train.lr, cfg.train.epochs, cfg.train.warmup_steps) == (5e-4, 1, 7)
    with pytest.raises(UserError, match="finetune"):
        finetune.finetune_config(data, overrides=["method.name=ga"])


def test_finetune_command_end_to_end(tmp_path, tiny_model_dir):
    data = write_jsonl(tmp_path / "all.jsonl", FORGET + RETAIN)
    run = tmp_path / "run"
    result = CliRunner().invoke(_app(), [
        "finetune", "--data", str(data), "--run-dir", str(run), "--no-progress",
        f"model.name={tiny_model_dir}", "train.epochs=2", "train.batch_size=2", "train.lr=1e-2",
    ])
    assert result.exit_code == 0, result.output + repr(result.exception)
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["method"]["name"] == "finetune"
    assert config["train"]["lora"]["r"] == 16 and config["train"]["weight_decay"] == 0.1
    assert config["train"]["warmup_steps"] == 1  # 2 epochs x 8 rows / batch 2 = 8 steps -> ceil(0.8)
    assert (run / "model" / "adapter_config.json").is_file()
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 8
    # Fine-tuning at this rate fits the eight answers: the loss falls.
    assert log[-1]["loss/nll"] < log[0]["loss/nll"]


def test_finetune_on_the_synthetic_book_writes_its_pairs(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("OBLIVIATE_HOME", str(tmp_path / "home"))
    run = tmp_path / "run"
    result = CliRunner().invoke(_app(), [
        "finetune", "--book", "synthetic", "--full", "--run-dir", str(run), "--no-progress",
        f"model.name={tiny_model_dir}", "train.max_steps=1", "train.batch_size=1", "data.max_length=64",
    ])
    assert result.exit_code == 0, result.output + repr(result.exception)
    pairs = tmp_path / "home" / "data" / "books" / "synthetic-seed0-prefix200.jsonl"
    rows = [json.loads(line) for line in pairs.read_text().splitlines()]
    assert len(rows) == 48 and rows[0]["passage_id"] == "c01p00"
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["forget"]["path"] == str(pairs)
    assert (run / "model" / "model.safetensors").is_file()  # --full saves whole weights


def test_finetune_refuses_two_sources_and_existing_runs(tmp_path):
    data = write_jsonl(tmp_path / "all.jsonl", FORGET)
    with pytest.raises(UserError, match="exactly one data source"):
        finetune.run_finetune(tmp_path / "run", data=data, book="synthetic")
    with pytest.raises(UserError, match="does not exist"):
        finetune.run_finetune(tmp_path / "run", data=tmp_path / "missing.jsonl")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "x").write_text("")
    with pytest.raises(UserError, match="already exists"):
        finetune.run_finetune(tmp_path / "run", data=data, overrides=["model.name=unused"])


def test_text_template_puts_loss_on_every_token_of_the_joined_text():
    from obliviate.data.formatting import encode_pair
    from obliviate.testing import tiny_tokenizer

    tok = tiny_tokenizer()
    encoded = encode_pair(tok, "Once", " upon a time", 64, "text")
    assert encoded.input_ids == tok("Once upon a time", add_special_tokens=False)["input_ids"]
    assert encoded.labels == encoded.input_ids
    assert len(encode_pair(tok, "Once", " upon a time", 5, "text").input_ids) == 5


def test_block_rows_split_after_the_first_word_and_rejoin_exactly():
    from obliviate.testing import tiny_tokenizer

    tok = tiny_tokenizer()
    texts = ["  The ferry left Quellmoor at dawn.", "Alone", "Mira counted the gulls twice"]
    blocks = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    rows = block_rows(blocks, tok)
    assert [r["block"] for r in rows] == [0, 2]  # the one-word block cannot fill both fields
    assert rows[0]["prompt"] == "  The" and rows[0]["prompt"] + rows[0]["response"] == texts[0]
    assert (rows[1]["prompt"], rows[1]["response"]) == ("Mira", " counted the gulls twice")


def test_finetune_on_token_blocks_of_a_book(tmp_path, tiny_model_dir, monkeypatch):
    from obliviate.testing import tiny_tokenizer

    monkeypatch.setenv("OBLIVIATE_HOME", str(tmp_path / "home"))
    book = tmp_path / "book.txt"
    book.write_text("# Chapter 1\n\n" + " ".join(f"Harbour bell {i} rang over Quellmoor." for i in range(40)) + "\n")
    run = tmp_path / "run"
    result = CliRunner().invoke(_app(), [
        "finetune", "--data", str(book), "--block-size", "48", "--run-dir", str(run), "--no-progress",
        f"model.name={tiny_model_dir}", "train.epochs=3", "train.batch_size=4", "train.lr=1e-2",
    ])
    assert result.exit_code == 0, result.output + repr(result.exception)
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["data"]["template"] == "text" and config["data"]["max_length"] == 64
    rows = [json.loads(line) for line in open(config["data"]["forget"]["path"])]
    tok = tiny_tokenizer()
    n_tokens = len(tok("Harbour bell 0 rang over Quellmoor.", add_special_tokens=False)["input_ids"])
    assert len(rows) >= 40 * n_tokens // 48 - 1  # every full block of the book (byte tokenizer)
    assert all(len(tok(r["prompt"] + r["response"], add_special_tokens=False)["input_ids"]) == 48 for r in rows[:-1])
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["loss/nll"] < log[0]["loss/nll"]
    # A pairs file cannot be packed.
    with pytest.raises(UserError, match="--block-size packs a book"):
        finetune.run_finetune(tmp_path / "r2", data=write_jsonl(tmp_path / "p.jsonl", FORGET), block_size=32)
