"""losses.py: the Wing loss and its jaw weighting against values worked out by hand."""

import math
import re

import keras
import numpy as np
import pytest

import losses
from config import Config

DIM = 128


def flat_error(pixels_by_point: dict) -> tuple[np.ndarray, np.ndarray]:
    """(truth, prediction) [1, 136] with point i's x off by pixels_by_point[i] crop pixels."""
    truth = np.zeros((1, 136), np.float32)
    pred = truth.copy()
    for point, pixels in pixels_by_point.items():
        pred[0, 2 * point] = pixels / DIM
    return truth, pred


def wing(pixels, width=10.0, epsilon=2.0):
    if pixels < width:
        return width * math.log(1 + pixels / epsilon)
    return pixels - (width - width * math.log(1 + width / epsilon))


@pytest.mark.parametrize("pixels", [0.5, 4.0, 25.0])
def test_wing_loss_is_log_shaped_below_w_and_linear_above(pixels):
    truth, pred = flat_error({30: pixels})
    value = float(losses.WingLoss(image_dim=DIM)(truth, pred))
    assert value == pytest.approx(wing(pixels) / 136, rel=1e-5)


def test_jaw_weight_counts_a_jaw_error_that_many_times_a_nose_error():
    weights = losses.coordinate_weights(2.0)
    # 17 jaw points at 2 and 51 others at 1 average 85 / 68 = 1.25: 1.6 and 0.8 after scaling.
    np.testing.assert_allclose(weights[:34], 1.6)
    np.testing.assert_allclose(weights[34:], 0.8)
    assert weights.mean() == pytest.approx(1.0)
    loss = losses.make_loss("wing", DIM, jaw_weight=2.0)
    jaw = float(loss(*flat_error({8: 3.0})))  # the chin
    nose = float(loss(*flat_error({30: 3.0})))
    assert jaw == pytest.approx(1.6 * wing(3.0) / 136, rel=1e-5)
    assert nose == pytest.approx(0.8 * wing(3.0) / 136, rel=1e-5)
    assert losses.coordinate_weights(1.0) is None


def test_jaw_weight_survives_a_save_and_a_reload(tmp_path):
    inputs = keras.Input((136,))
    model = keras.Model(inputs, keras.layers.Identity()(inputs))
    model.compile(loss=losses.make_loss("wing", DIM, jaw_weight=3.0))
    model.save(tmp_path / "m.keras")
    reloaded = keras.saving.load_model(tmp_path / "m.keras", custom_objects=losses.CUSTOM_OBJECTS)
    assert reloaded.loss.coordinate_weights == pytest.approx(list(losses.coordinate_weights(3.0)))


def test_jaw_weight_is_refused_where_it_would_be_ignored():
    with pytest.raises(ValueError, match="wing loss only"):
        losses.make_loss("mse", DIM, jaw_weight=2.0)
    with pytest.raises(ValueError, match="positive"):
        losses.coordinate_weights(0.0)
    assert Config().jaw_weight == 1.0


@pytest.mark.parametrize("argv, message", [
    (["--jaw-weight", "2"], "--jaw-weight 2 needs --loss wing, not --loss mse"),
    (["--loss", "wing", "--jaw-weight", "0"], "--jaw-weight must be positive"),
    (["--distill-weight", "1.5"], r"--distill-weight must be in \[0, 1\]"),
])
def test_train_refuses_loss_settings_that_cannot_work_when_parsing(argv, message, capsys):
    import train

    with pytest.raises(SystemExit) as stopped:
        train.parse_args(argv)
    assert stopped.value.code == 2
    assert re.search(message, capsys.readouterr().err)
    assert train.parse_args(["--loss", "wing", "--jaw-weight", "2"]).jaw_weight == 2.0
