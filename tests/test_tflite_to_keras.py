"""tools/tflite_to_keras.py rebuilds the shipped network's Keras weights from its float32 TFLite
file: same function in inference, and batch statistics that start where inference is."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import REPO_DIR

FLOAT_MODEL = REPO_DIR / "models" / "landmarks_float32.tflite"
SHIPPED_ARCH = json.loads(FLOAT_MODEL.with_suffix(".json").read_text())["arch"]


@pytest.fixture(scope="module")
def crops(train_faces):
    from evaluate import frame_faces

    framing = {"image_dim": 128, "crop_margin": 0.2, "crop_shift_y": 0.06}
    return frame_faces(train_faces[:48], framing)[0]


def test_the_rebuilt_model_computes_what_the_tflite_file_does(crops):
    from tools import tflite_to_keras
    from evaluate import TFLiteLandmarks

    model = tflite_to_keras.rebuild(FLOAT_MODEL, 128, crops, SHIPPED_ARCH)
    keras_points = model.predict(crops, verbose=0).reshape(len(crops), 68, 2)
    lite_points = TFLiteLandmarks(FLOAT_MODEL).predict_crops(crops)
    assert np.abs(keras_points - lite_points).max() * 128 < 0.01
    # Training mode normalises by the batch's own statistics: on the crops the moving
    # statistics were measured on, that is the inference function again.
    training_points = np.asarray(model(crops, training=True)).reshape(len(crops), 68, 2)
    assert np.abs(training_points - keras_points).max() * 128 < 0.05


def test_the_shipped_keras_weights_match_the_shipped_tflite(crops):
    from evaluate import KerasLandmarks, TFLiteLandmarks

    keras_points = KerasLandmarks(REPO_DIR / "models" / "keras" / "best_model.weights.h5").predict_crops(crops)
    lite_points = TFLiteLandmarks(FLOAT_MODEL).predict_crops(crops)
    assert np.abs(keras_points - lite_points).max() * 128 < 0.01


def test_a_file_of_another_network_is_refused(tmp_path, crops):
    from tools import tflite_to_keras

    with pytest.raises(ValueError, match="int8 weights; rebuild from the float32 export"):
        tflite_to_keras.rebuild(REPO_DIR / "models" / "landmarks_int8.tflite", 128, crops)
    with pytest.raises(ValueError):
        tflite_to_keras.rebuild(REPO_DIR / "imgs" / "test_image.jpeg", 128, crops)
