"""Training losses and the 300-W metric, as Keras objects (train.py), on flat
[batch, 136] landmark vectors in [-0.5, 0.5] crop coordinates."""

from __future__ import annotations

import math

import keras
from keras import ops

from config import LEFT_EYE_OUTER, NUM_LANDMARKS, RIGHT_EYE_OUTER
from model import SoftArgmax2D


def _points(flat):
    return ops.reshape(flat, (-1, NUM_LANDMARKS, 2))


@keras.saving.register_keras_serializable(package="landmarks")
def nme(y_true, y_pred):
    """Per-face NME normalised by the outer-eye-corner distance (points 36 and 45).

    The crop scales a face uniformly, so the ratio is the same in crop and photo pixels.
    """
    truth, pred = _points(y_true), _points(y_pred)
    errors = ops.sqrt(ops.sum(ops.square(truth - pred), axis=-1))
    inter_ocular = ops.sqrt(ops.sum(ops.square(truth[:, LEFT_EYE_OUTER] - truth[:, RIGHT_EYE_OUTER]), axis=-1))
    return ops.mean(errors, axis=-1) / ops.maximum(inter_ocular, 1e-6)


@keras.saving.register_keras_serializable(package="landmarks")
class WingLoss(keras.losses.Loss):
    """Wing loss (Feng et al., CVPR 2018), with w and epsilon in pixels of a
    ``image_dim`` crop: log-shaped near zero so small errors keep a useful gradient."""

    def __init__(self, width=10.0, epsilon=2.0, image_dim=128, name="wing_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.width, self.epsilon, self.image_dim = float(width), float(epsilon), int(image_dim)
        self._c = self.width - self.width * math.log(1.0 + self.width / self.epsilon)

    def call(self, y_true, y_pred):
        error = ops.abs(y_true - y_pred) * self.image_dim
        loss = ops.where(error < self.width,
                         self.width * ops.log(1.0 + error / self.epsilon),
                         error - self._c)
        return ops.mean(loss, axis=-1)

    def get_config(self):
        return {**super().get_config(), "width": self.width, "epsilon": self.epsilon,
                "image_dim": self.image_dim}


def make_loss(name: str, image_dim: int):
    if name == "mse":
        return keras.losses.MeanSquaredError()
    if name == "l1":
        return keras.losses.MeanAbsoluteError()
    if name == "wing":
        return WingLoss(image_dim=image_dim)
    raise ValueError(f"unknown loss {name!r}; choose mse, l1 or wing")


CUSTOM_OBJECTS = {"nme": nme, "WingLoss": WingLoss, "SoftArgmax2D": SoftArgmax2D}
