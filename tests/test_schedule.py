"""train.py's learning-rate schedule (warm-up, cosine) and its moving average of the weights
(--ema): the rates by hand, the refusals, and a real short run whose saved weights are the
average of the raw weights step by step."""

import csv
import math

import keras
import numpy as np
import pytest

import callbacks
import losses
import train
from model import build_network

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def rate(schedule, step: int) -> float:
    return float(schedule) if isinstance(schedule, float) else float(schedule(step))


def test_constant_without_warmup_is_the_seeds_plain_number():
    config = train.parse_args(["--lr", "0.002"])
    assert train.learning_rate(config, 30) == 0.002


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_warmup_rises_linearly_from_one_percent_then_follows_the_schedule(schedule):
    lr, steps, epochs = 0.001, 10, 5  # 50 steps, the first 15 warming up
    config = train.parse_args(["--lr", str(lr), "--epochs", str(epochs), "--lr-schedule", schedule,
                               "--warmup-epochs", "1.5"])
    got = train.learning_rate(config, steps)
    for step in (0, 5, 10):
        assert rate(got, step) == pytest.approx(0.01 * lr + (lr - 0.01 * lr) * step / 15, rel=1e-5)
    assert rate(got, 15) == pytest.approx(lr, rel=1e-5)
    for step in (20, 32, 45, 50, 80):
        if schedule == "constant":
            want = lr
        else:  # cosine over the 35 steps after the warm-up, down to 1 %, then held there
            progress = min(step - 15, 35) / 35
            want = lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress)))
        assert rate(got, step) == pytest.approx(want, rel=1e-5), step


def test_cosine_without_warmup_starts_at_the_rate_and_ends_at_one_percent():
    config = train.parse_args(["--lr", "0.0004", "--epochs", "4", "--lr-schedule", "cosine"])
    got = train.learning_rate(config, 25)
    assert rate(got, 0) == pytest.approx(0.0004, rel=1e-6)
    assert rate(got, 50) == pytest.approx(0.0004 * (0.01 + 0.99 * 0.5), rel=1e-5)
    assert rate(got, 100) == pytest.approx(0.000004, rel=1e-5)


@pytest.mark.parametrize("argv, message", [
    (["--ema", "1"], "--ema must be in [0, 1), got 1"),
    (["--ema", "-0.5"], "--ema must be in [0, 1), got -0.5"),
    (["--warmup-epochs", "-1"], "--warmup-epochs must be at least 0 and less than --epochs (30), got -1"),
    (["--epochs", "4", "--warmup-epochs", "4"], "less than --epochs (4), got 4"),
])
def test_schedule_settings_that_cannot_work_are_refused_when_parsing(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_an_ema_run_validates_and_saves_the_average_of_the_raw_weights(subset_dir, tmp_path):
    """Three steps at a high rate with --ema 0.6: the saved best weights must be Keras'
    average of the raw weights after each step (the first step's weights, then
    0.6 * average + 0.4 * weights), the epoch's val_nme must be theirs, and history.csv must
    record the rate at the epoch's end."""
    raw = []

    class Spy(callbacks.LogLearningRate):
        def on_train_batch_end(self, batch, logs=None):
            raw.append([np.array(w) for w in self.model.trainable_weights])

    config = train.parse_args([
        "--data-dir", str(subset_dir), "--arch", "mobile", "--epochs", "2", "--steps-per-epoch", "3",
        "--batch-size", "4", "--val-fraction", "0.02", "--lr", "0.01", "--lr-schedule", "cosine",
        "--warmup-epochs", "1", "--ema", "0.6", "--loss", "wing",
        "--checkpoint-dir", str(tmp_path / "run"), "--no-download"])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(callbacks, "LogLearningRate", Spy)
        train.train(config)
    assert len(raw) == 6

    with open(tmp_path / "run" / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    schedule = train.learning_rate(config, 3)
    for epoch, row in enumerate(rows):
        assert float(row["learning_rate"]) == pytest.approx(rate(schedule, 3 * (epoch + 1)), rel=1e-5)

    best_epoch = min(range(2), key=lambda e: float(rows[e]["val_nme"]))
    average = raw[0]
    for weights in raw[1:3 * (best_epoch + 1)]:
        average = [0.6 * a + 0.4 * w for a, w in zip(average, weights)]
    saved = build_network("mobile", 128)
    saved.load_weights(str(tmp_path / "run" / callbacks.BEST_WEIGHTS))
    last_raw = raw[3 * (best_epoch + 1) - 1]
    assert any(not np.allclose(a, w, atol=1e-4) for a, w in zip(average, last_raw))
    for got, want in zip(saved.trainable_weights, average):
        np.testing.assert_allclose(np.asarray(got), want, atol=2e-6, err_msg=got.path)

    # The epoch's val_nme is the averaged network's, not the raw one's.
    val_data = train.prepare_data(config)[1]
    saved.compile(loss=losses.make_loss("wing", 128), metrics=[losses.nme])
    val_nme = saved.evaluate(val_data.tf_dataset(8), verbose=0, return_dict=True)["nme"]
    assert val_nme == pytest.approx(float(rows[best_epoch]["val_nme"]), rel=1e-5)
    for variable, weights in zip(saved.trainable_weights, last_raw):
        variable.assign(weights)
    raw_nme = saved.evaluate(val_data.tf_dataset(8), verbose=0, return_dict=True)["nme"]
    assert abs(raw_nme - val_nme) > 1e-4 * val_nme
