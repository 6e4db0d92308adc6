"""Training losses and the 300-W metric, as Keras objects (train.py), on flat
[batch, 136] landmark vectors in [-0.5, 0.5] crop coordinates."""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from config import LEFT_EYE_OUTER, NUM_LANDMARKS, RIGHT_EYE_OUTER
from model import OffsetSoftArgmax2D, SoftArgmax2D


def _points(flat):
    return ops.reshape(flat, (-1, NUM_LANDMARKS, 2))


@keras.saving.register_keras_serializable(package="landmarks")
def nme(y_true, y_pred):
    """Per-face NME normalised by the outer-eye-corner distance (points 36 and 45).

    The crop scales a face uniformly, so the ratio is the same in crop and photo pixels.
    Only the annotations count: targets that carry a teacher's points after them
    (distill.py: [batch, 272]) are scored on their first 136 numbers.
    """
    truth, pred = _points(y_true[:, :2 * NUM_LANDMARKS]), _points(y_pred)
    errors = ops.sqrt(ops.sum(ops.square(truth - pred), axis=-1))
    inter_ocular = ops.sqrt(ops.sum(ops.square(truth[:, LEFT_EYE_OUTER] - truth[:, RIGHT_EYE_OUTER]), axis=-1))
    return ops.mean(errors, axis=-1) / ops.maximum(inter_ocular, 1e-6)


@keras.saving.register_keras_serializable(package="landmarks")
class WingLoss(keras.losses.Loss):
    """Wing loss (Feng et al., CVPR 2018), with w and epsilon in pixels of a
    ``image_dim`` crop: log-shaped near zero so small errors keep a useful gradient.

    ``coordinate_weights``: one weight per output number (136), or None for all 1.
    """

    def __init__(self, width=10.0, epsilon=2.0, image_dim=128, coordinate_weights=None,
                 name="wing_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.width, self.epsilon, self.image_dim = float(width), float(epsilon), int(image_dim)
        self._c = self.width - self.width * math.log(1.0 + self.width / self.epsilon)
        self.coordinate_weights = (None if coordinate_weights is None
                                   else [float(v) for v in coordinate_weights])

    def call(self, y_true, y_pred):
        error = ops.abs(y_true - y_pred) * self.image_dim
        loss = ops.where(error < self.width,
                         self.width * ops.log(1.0 + error / self.epsilon),
                         error - self._c)
        if self.coordinate_weights is not None:
            loss = loss * ops.cast(np.array(self.coordinate_weights, np.float32), loss.dtype)
        return ops.mean(loss, axis=-1)

    def get_config(self):
        return {**super().get_config(), "width": self.width, "epsilon": self.epsilon,
                "image_dim": self.image_dim, "coordinate_weights": self.coordinate_weights}


JAW_POINTS = slice(0, 17)


def coordinate_weights(jaw_weight: float) -> np.ndarray | None:
    """Per-output weights [136] giving the jaw's 17 points ``jaw_weight`` times the weight of
    the other 51, scaled to average 1; None when ``jaw_weight`` is 1."""
    if jaw_weight == 1.0:
        return None
    if jaw_weight <= 0:
        raise ValueError(f"jaw_weight must be positive, got {jaw_weight}")
    points = np.ones(NUM_LANDMARKS)
    points[JAW_POINTS] = jaw_weight
    return np.repeat(points / points.mean(), 2)


@keras.saving.register_keras_serializable(package="landmarks")
class DistillationLoss(keras.losses.Loss):
    """Knowledge distillation (distill.py): targets [batch, 272] hold the annotations and then
    a teacher's points for the same crops; the loss is ``(1 - teacher_weight)`` times
    ``base`` against the annotations plus ``teacher_weight`` times ``base`` against the
    teacher. Targets of 136 numbers (validation) are scored against the annotations alone.
    """

    def __init__(self, base, teacher_weight: float = 0.5, name="distillation_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.base = keras.losses.deserialize(base) if isinstance(base, dict) else base
        if not 0.0 <= float(teacher_weight) <= 1.0:
            raise ValueError(f"teacher_weight must be in [0, 1], got {teacher_weight}")
        self.teacher_weight = float(teacher_weight)

    def call(self, y_true, y_pred):
        width = 2 * NUM_LANDMARKS
        truth_loss = self.base.call(y_true[:, :width], y_pred)
        if y_true.shape[-1] == width:
            return truth_loss
        teacher_loss = self.base.call(y_true[:, width:], y_pred)
        return (1.0 - self.teacher_weight) * truth_loss + self.teacher_weight * teacher_loss

    def get_config(self):
        return {**super().get_config(), "base": keras.losses.serialize(self.base),
                "teacher_weight": self.teacher_weight}


def make_loss(name: str, image_dim: int, jaw_weight: float = 1.0):
    if jaw_weight != 1.0 and name != "wing":
        raise ValueError(f"jaw_weight is supported with the wing loss only, not {name!r}")
    if name == "mse":
        return keras.losses.MeanSquaredError()
    if name == "l1":
        return keras.losses.MeanAbsoluteError()
    if name == "wing":
        return WingLoss(image_dim=image_dim, coordinate_weights=coordinate_weights(jaw_weight))
    raise ValueError(f"unknown loss {name!r}; choose mse, l1 or wing")


CUSTOM_OBJECTS = {"nme": nme, "WingLoss": WingLoss, "DistillationLoss": DistillationLoss,
                  "SoftArgmax2D": SoftArgmax2D, "OffsetSoftArgmax2D": OffsetSoftArgmax2D}
