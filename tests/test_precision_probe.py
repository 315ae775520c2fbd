"""``train.precision: auto`` on a CPU is measured: the faster of fp32 and bf16 autocast by a
margin, timed once per machine and shapes, cached in $OBLIVIATE_HOME, recorded in env.json."""

import json
import time
from types import SimpleNamespace

import pytest

from obliviate.models import precision_probe as probe
from obliviate.train.loop import run_training

SHAPES = SimpleNamespace(hidden_size=64, intermediate_size=128, vocab_size=500, num_hidden_layers=2)


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("OBLIVIATE_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(probe.torch.cuda, "is_available", lambda: False)
    return tmp_path / "home"


def fake_timer(monkeypatch, bf16_share: float):
    """Every product takes 1 ms in fp32 and ``bf16_share`` ms under bf16; returns the call log."""
    calls = []

    def timer(n_in, n_out, dtype, **_):
        calls.append((n_in, n_out, dtype))
        return 1.0 if dtype == "fp32" else bf16_share

    monkeypatch.setattr(probe, "time_product", timer)
    return calls


@pytest.mark.parametrize("bf16_share, chosen", [(0.5, "bf16"), (0.9, "bf16"), (0.97, "fp32"), (1.0, "fp32"), (1.4, "fp32")])
def test_the_choice_follows_the_faster_dtype_and_the_margin(home, monkeypatch, bf16_share, chosen):
    fake_timer(monkeypatch, bf16_share)
    choice = probe.precision_choice("auto", SHAPES)
    assert choice.mixed == ("bf16" if chosen == "bf16" else "no")
    assert choice.record["chosen"] == chosen
    assert choice.record["step_estimate_ms"]["bf16"] == pytest.approx(bf16_share * choice.record["step_estimate_ms"]["fp32"])
    if bf16_share == 0.97:  # faster, but within the margin: noise must not flip the choice
        assert "needs 5%" in choice.record["reason"]


def test_the_choice_weighs_each_product_by_how_often_a_step_runs_it():
    # bf16 wins the output layer but loses the per-layer products, which a 2-layer step runs 14 times
    ms = {"hidden_x_hidden": {"fp32": 1.0, "bf16": 1.5}, "hidden_x_intermediate": {"fp32": 1.0, "bf16": 1.5},
          "hidden_x_vocab": {"fp32": 10.0, "bf16": 4.0}}
    weights = probe.step_weights(probe.model_shapes(SHAPES))
    assert weights == {"hidden_x_hidden": 8, "hidden_x_intermediate": 6, "hidden_x_vocab": 1}
    mixed, step, _ = probe.decide(ms, weights)
    assert (mixed, step) == ("no", {"fp32": 24.0, "bf16": 25.0})
    mixed, _, _ = probe.decide(ms, {**weights, "hidden_x_hidden": 1, "hidden_x_intermediate": 1})
    assert mixed == "bf16"


def test_the_timed_shapes_come_from_the_model_config(home, monkeypatch):
    calls = fake_timer(monkeypatch, 1.0)
    probe.precision_choice("auto", SHAPES)
    assert sorted(set(calls)) == sorted({(64, 64, d) for d in ("fp32", "bf16")} | {(64, 128, d) for d in ("fp32", "bf16")}
                                        | {(64, 500, d) for d in ("fp32", "bf16")})


def test_the_cache_is_written_reused_keyed_and_a_corrupt_file_is_measured_again(home, monkeypatch):
    calls = fake_timer(monkeypatch, 0.5)
    first = probe.precision_choice("auto", SHAPES)
    path = home / "cache" / "precision" / first.record["cache_file"].rsplit("/", 1)[1]
    assert first.record["from_cache"] is False and path.exists() and len(calls) == 6
    assert json.loads(path.read_text())["key"]["shapes"] == {"hidden": 64, "intermediate": 128, "vocab": 500}

    again = probe.precision_choice("auto", SHAPES)  # reused: the timer is not called
    assert again.record["from_cache"] is True and len(calls) == 6
    assert (again.mixed, again.record["ms"]) == (first.mixed, first.record["ms"])
    # A deeper model of the same widths weighs the same timings differently, from the cache.
    deeper = probe.precision_choice("auto", SimpleNamespace(**{**vars(SHAPES), "num_hidden_layers": 8}))
    assert deeper.record["from_cache"] is True and len(calls) == 6

    wider = probe.precision_choice("auto", SimpleNamespace(**{**vars(SHAPES), "hidden_size": 96}))
    assert wider.record["from_cache"] is False and len(calls) == 12
    assert wider.record["cache_file"] != first.record["cache_file"]

    this_cpu = probe.cpu_name
    monkeypatch.setattr(probe, "cpu_name", lambda: "Another CPU")
    other_cpu = probe.precision_choice("auto", SHAPES)
    assert other_cpu.record["from_cache"] is False and len(calls) == 18
    assert other_cpu.record["cache_file"] != first.record["cache_file"]

    monkeypatch.setattr(probe, "cpu_name", this_cpu)
    for garbage in ("{not json", json.dumps({"key": "x", "ms": {}}), ""):
        path.write_text(garbage)
        calls = fake_timer(monkeypatch, 1.2)
        mended = probe.precision_choice("auto", SHAPES)
        assert mended.record["from_cache"] is False and mended.record["replaced_unreadable_cache"] is True
        assert len(calls) == 6 and mended.mixed == "no"  # the new timings, not the old file's
        assert json.loads(path.read_text())["ms"]["hidden_x_vocab"] == {"fp32": 1.0, "bf16": 1.2}


def test_an_explicit_precision_is_not_measured(home, monkeypatch):
    calls = fake_timer(monkeypatch, 0.5)
    assert probe.precision_choice("fp32", SHAPES).mixed == "no"
    assert probe.precision_choice("bf16", SHAPES).record == {"requested": "bf16", "chosen": "bf16", "reason": "train.precision: bf16"}
    assert calls == [] and not (home / "cache").exists()


def test_a_real_tiny_probe_is_quick_and_gives_positive_timings(home):
    start = time.perf_counter()
    choice = probe.precision_choice("auto", SimpleNamespace(hidden_size=16, intermediate_size=32, vocab_size=64,
                                                             num_hidden_layers=1))
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0, elapsed  # well under a second on an idle machine; slack for a loaded one
    assert choice.mixed in ("no", "bf16")
    assert all(v > 0 for per in choice.record["ms"].values() for v in per.values())
    assert set(choice.record["ms"]) == {"hidden_x_hidden", "hidden_x_intermediate", "hidden_x_vocab"}


def test_auto_on_a_tiny_run_records_the_probe_in_env_json_and_trains_in_the_choice(home, monkeypatch, make_config,
                                                                                    tiny_model_dir, tmp_path):
    from accelerate.state import AcceleratorState

    calls = fake_timer(monkeypatch, 0.5)  # bf16 measured twice as fast: the run must use it
    run_training(make_config("train.max_steps=1", "train.precision=auto"), tmp_path / "a", progress=False, log=lambda m: None)
    env = json.loads((tmp_path / "a" / "env.json").read_text())
    model_config = json.loads((tiny_model_dir / "config.json").read_text())
    block = env["precision_choice"]
    assert env["precision"] == "bf16" and AcceleratorState().mixed_precision == "bf16"
    assert (block["requested"], block["chosen"], block["from_cache"]) == ("auto", "bf16", False)
    assert block["shapes"]["hidden"] == model_config["hidden_size"]
    assert block["shapes"]["vocab"] == model_config["vocab_size"]
    assert block["ms"]["hidden_x_vocab"] == {"fp32": 1.0, "bf16": 0.5} and "faster" in block["reason"]
    assert calls

    calls.clear()
    run_training(make_config("train.max_steps=1"), tmp_path / "b", progress=False, log=lambda m: None)
    env = json.loads((tmp_path / "b" / "env.json").read_text())
    assert calls == [] and env["precision_choice"]["from_cache"] is True and env["precision"] == "bf16"

    run_training(make_config("train.max_steps=1", "train.precision=fp32"), tmp_path / "c", progress=False, log=lambda m: None)
    env = json.loads((tmp_path / "c" / "env.json").read_text())
    assert env["precision"] == "no" and AcceleratorState().mixed_precision == "no"
    assert env["precision_choice"] == {"requested": "fp32", "chosen": "fp32", "reason": "train.precision: fp32"}
