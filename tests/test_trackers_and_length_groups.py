"""train.report_to (experiment trackers get the train_log.jsonl records) and train.group_by_length
(forget batches of similar token length)."""

import json

import numpy as np
import pytest

from obliviate.errors import UserError
from obliviate.train import trackers
from obliviate.train.length_groups import LengthGroupedOrder, grouped_permutation
from obliviate.train.loop import run_training, stream_indices

MIXED_LENGTHS = [int(v) for v in np.random.default_rng(3).integers(4, 120, size=203)]


def padded_tokens(lengths, positions, batch):
    """What padding every batch to its longest row costs, in tokens, over the given stream positions."""
    rows = [lengths[i] for i in positions]
    return sum(max(rows[k: k + batch]) * len(rows[k: k + batch]) for k in range(0, len(rows), batch))


@pytest.mark.parametrize("n, batch", [(203, 4), (24, 4), (7, 3), (5, 8)])
def test_grouped_stream_has_every_row_once_per_epoch(n, batch):
    lengths = MIXED_LENGTHS[:n]
    order = LengthGroupedOrder(lengths, seed=1, batch=batch)
    stream = stream_indices(n, 1, 0, 4 * n, order)
    for epoch in range(4):
        assert sorted(stream[epoch * n: (epoch + 1) * n]) == list(range(n))
    # several mega-batches in one epoch
    assert sorted(grouped_permutation(lengths, 1, 0, batch, mega_batches=2).tolist()) == list(range(n))


def test_grouped_order_depends_only_on_seed_epoch_and_lengths():
    first = LengthGroupedOrder(MIXED_LENGTHS, seed=5, batch=4)
    whole = stream_indices(len(MIXED_LENGTHS), 5, 0, 1000, first)
    # a resumed run builds a new order object and starts mid-stream: the same rows come
    resumed = LengthGroupedOrder(MIXED_LENGTHS, seed=5, batch=4)
    assert stream_indices(len(MIXED_LENGTHS), 5, 612, 388, resumed) == whole[612:]
    other_seed = stream_indices(len(MIXED_LENGTHS), 6, 0, 1000, LengthGroupedOrder(MIXED_LENGTHS, seed=6, batch=4))
    assert other_seed != whole
    # epochs differ from each other too (the batches are reshuffled every epoch)
    n = len(MIXED_LENGTHS)
    assert whole[:n] != whole[n: 2 * n]


def test_grouping_cuts_padding_of_mixed_lengths():
    n, batch = len(MIXED_LENGTHS), 4
    count = 3 * n  # three epochs; 203 rows do not divide by 4, so epochs start inside a batch
    plain = stream_indices(n, 0, 0, count)
    grouped = stream_indices(n, 0, 0, count, LengthGroupedOrder(MIXED_LENGTHS, seed=0, batch=batch))
    real = sum(MIXED_LENGTHS[i] for i in plain)
    assert real == sum(MIXED_LENGTHS[i] for i in grouped)  # same rows, same real tokens
    plain_pad = padded_tokens(MIXED_LENGTHS, plain, batch) - real
    grouped_pad = padded_tokens(MIXED_LENGTHS, grouped, batch) - real
    assert grouped_pad < 0.25 * plain_pad, (grouped_pad, plain_pad)


def test_report_to_takes_a_list_or_a_comma_string(make_config):
    assert make_config("train.report_to=tensorboard, wandb").train.report_to == ["tensorboard", "wandb"]
    assert make_config().train.report_to == []
    with pytest.raises(UserError, match="report_to"):
        make_config("train.report_to=comet")


def test_missing_tracker_package_is_one_line_before_anything_is_made(make_config, tmp_path, monkeypatch):
    real = trackers.importlib.util.find_spec
    monkeypatch.setattr(
        trackers.importlib.util, "find_spec", lambda name, *a: None if name in ("tensorboard", "tensorboardX") else real(name, *a)
    )
    with pytest.raises(UserError) as info:
        run_training(make_config("train.report_to=tensorboard"), tmp_path / "run", progress=False, log=lambda m: None)
    assert str(info.value) == "train.report_to: tensorboard needs `pip install tensorboard`"
    assert not (tmp_path / "run").exists()


def test_tensorboard_gets_the_train_log_records(make_config, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = make_config("train.report_to=tensorboard", "train.max_steps=3", "train.group_by_length=true", "run.name=tb")
    run = tmp_path / "run"
    result = run_training(config, run, progress=False, log=lambda m: None)
    assert result.steps == 3
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    events = EventAccumulator(str(run / "trackers" / "tb"))
    events.Reload()
    for key in ("loss/total", "loss/forget", "grad_norm", "lr"):
        logged = [(e.step, e.value) for e in events.Scalars(key)]
        assert [s for s, _ in logged] == [r["step"] for r in log]
        assert [v for _, v in logged] == pytest.approx([r[key] for r in log], rel=1e-6)
    assert not [p for p in run.iterdir() if p.name in ("runs", "wandb", "mlruns")]  # nothing outside trackers/


def test_resume_may_add_a_tracker_but_not_change_grouping(make_config, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    run_training(make_config("train.max_steps=3", "train.save_every=2"), run, progress=False, log=lambda m: None)
    with pytest.raises(UserError, match="section 'train' differs"):
        run_training(
            make_config("train.max_steps=3", "train.save_every=2", "train.group_by_length=true"), run,
            resume=True, progress=False, log=lambda m: None,
        )
    resumed = make_config("train.max_steps=3", "train.save_every=2", "train.report_to=tensorboard")
    assert run_training(resumed, run, resume=True, progress=False, log=lambda m: None).steps == 3
    events = EventAccumulator(str(run / "trackers" / "unlearn"))
    events.Reload()
    assert [e.step for e in events.Scalars("loss/total")] == [3]  # only the steps this process ran
