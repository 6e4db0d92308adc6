"""Knowledge distillation: train a small network on a teacher's points as well as the
annotations (Hinton et al. 2015; for landmarks e.g. Sun et al., "Fair Distillation", and the
"teacher-student" schemes of PFLD's successors).

The teacher is one trained network or an average of several (an ensemble, optionally each
also run on the mirrored crop, as evaluate.py's ``--flip-average``). It looks at the very
crops the student trains on, after augmentation, so every random crop gets its own soft
target; ``train.py --teacher ARCH=WEIGHTS[,ARCH=WEIGHTS...] --distill-weight 0.5`` appends
its 136 numbers to each training batch's targets, and ``losses.DistillationLoss`` mixes the
loss against the annotations with the loss against the teacher. Validation stays on the
annotations alone.

    python train.py --arch mobile-wide --teacher mobile-wide=big.weights.h5,mobile-s4=s4.weights.h5
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

import geometry


class TeacherError(ValueError):
    """A --teacher entry that cannot be used (bad syntax, missing file, wrong shape)."""


@dataclass(frozen=True)
class TeacherSpec:
    arch: str
    weights: Path


def parse_teachers(text: str) -> list[TeacherSpec]:
    """``"mobile-wide=a.weights.h5,mobile-s4=b.weights.h5"`` -> one TeacherSpec each."""
    from model import ARCHITECTURES

    specs = []
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        arch, sep, weights = entry.partition("=")
        if not sep or not weights:
            raise TeacherError(f"--teacher {entry!r}: expected ARCH=WEIGHTS_FILE")
        if arch not in ARCHITECTURES:
            raise TeacherError(f"--teacher {entry!r}: unknown architecture {arch!r}; "
                               f"choose one of {sorted(ARCHITECTURES)}")
        if not Path(weights).is_file():
            raise TeacherError(f"{weights}: teacher weights file not found (--teacher {entry})")
        specs.append(TeacherSpec(arch, Path(weights)))
    if not specs:
        raise TeacherError(f"--teacher {text!r} names no network")
    return specs


def flip_back(points_flat, ops):
    """A flat [B, 136] prediction for the left-right mirrored crop, in [-0.5, 0.5] crop
    coordinates, as points of the crop itself: x -> -x and each point back to its own slot
    (geometry.unmirror_landmarks in normalised coordinates)."""
    points = ops.reshape(points_flat, (-1, geometry.NUM_LANDMARKS, 2))
    points = ops.take(points, geometry.FLIP_PERMUTATION_68, axis=1)
    points = points * np.array([-1.0, 1.0], np.float32)
    return ops.reshape(points, (-1, 2 * geometry.NUM_LANDMARKS))


class Teacher:
    """The mean prediction [B, 136] of one or more frozen networks on a batch of crops."""

    def __init__(self, specs: list[TeacherSpec], image_dim: int, flip: bool = True):
        from model import build_network

        self.specs, self.flip = list(specs), flip
        self.networks = []
        for spec in self.specs:
            network = build_network(spec.arch, image_dim)
            try:
                network.load_weights(str(spec.weights))
            except (OSError, ValueError) as err:
                raise TeacherError(f"{spec.weights}: cannot load its weights into --arch "
                                   f"{spec.arch} at {image_dim} px ({err})") from None
            network.trainable = False
            self.networks.append(network)

    def __call__(self, images):
        from keras import ops

        outputs = []
        for network in self.networks:
            outputs.append(ops.cast(network(images, training=False), "float32"))
            if self.flip:
                mirrored = network(ops.flip(images, axis=2), training=False)
                outputs.append(flip_back(ops.cast(mirrored, "float32"), ops))
        return ops.mean(ops.stack(outputs), axis=0)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """__call__ on a NumPy batch, through a compiled Keras model (any backend)."""
        if getattr(self, "_model", None) is None:
            import keras

            inputs = keras.Input(self.networks[0].input_shape[1:])
            self._model = keras.Model(inputs, self(inputs), name="teacher")
        return np.asarray(self._model.predict_on_batch(images), dtype=np.float32)

    def describe(self) -> str:
        names = ", ".join(f"{s.arch} ({s.weights})" for s in self.specs)
        return f"teacher: mean of {names}" + (", each with its mirrored crop" if self.flip else "")


def with_teacher_targets(batches, teacher: Teacher):
    """A tf.data stream of (images, annotations [B, 136]) batches -> (images, [B, 272]):
    the annotations, then the teacher's points for the same images."""
    import tensorflow as tf

    def add(images, targets):
        return images, tf.concat([targets, teacher(images)], axis=-1)

    return batches.map(add, num_parallel_calls=1).prefetch(tf.data.AUTOTUNE)


def with_teacher_arrays(batches, teacher: Teacher):
    """with_teacher_targets for a Python iterator of NumPy (images, annotations) batches
    (packed_train.py). Closing the returned generator closes ``batches``."""
    try:
        for images, targets in batches:
            yield images, np.concatenate([targets, teacher.predict(images)], axis=-1)
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()
