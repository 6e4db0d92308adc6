"""A second, higher-resolution look at each eye.

The landmark model sees a whole face in 128 x 128 pixels: an eye is about 15 pixels wide there,
and an eyelid gap of a narrow eye is one or two. The eye model (``models/eyes.tflite``,
trained by ``train_eyes.py``) looks at one eye at a time, cut from the photo around the first
pass's six eye points at 48 x 48 pixels (an eye about 24 pixels wide), and gives those six
points again. A left eye is mirrored so that both eyes look alike to it. It replaces the
first pass's eye points (``predict.py --refine-eyes``): eyelids that close when the eye does,
which is what blink and drowsiness detection reads (the model card has the figures).

Runs on a Raspberry Pi: ai-edge-litert, OpenCV and NumPy only.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

import geometry

EYE_DIM = 48  # pixels of an eye crop
EYE_SIDE = 2.0  # crop side, in eye widths (outer to inner corner)
# The person's right eye, in the iBUG order: outer corner, upper lid (2), inner corner,
# lower lid (2). The left eye mirrored left-right, in the same roles and order.
RIGHT_EYE = np.array([36, 37, 38, 39, 40, 41])
LEFT_EYE_MIRRORED = np.array([45, 44, 43, 42, 47, 46])
EYES = ((RIGHT_EYE, False), (LEFT_EYE_MIRRORED, True))

DEFAULT_EYE_MODEL = Path(__file__).resolve().parent / "models" / "eyes.tflite"


def eye_square(eye_px: np.ndarray, mirrored: bool):
    """(centre, side, angle_deg) of an eye's crop from its six points in the role order of
    RIGHT_EYE (a left eye in LEFT_EYE_MIRRORED order): centred on the points' mean, side
    EYE_SIDE eye widths, turned so the corners lie level."""
    eye_px = np.asarray(eye_px, dtype=np.float64)
    outer, inner = eye_px[0], eye_px[3]
    left, right = (inner, outer) if mirrored else (outer, inner)  # on the image's left/right
    angle = math.degrees(math.atan2(right[1] - left[1], right[0] - left[0]))
    width = float(np.linalg.norm(inner - outer))
    return eye_px.mean(axis=0), EYE_SIDE * max(width, 1.0), angle


def eye_crop(image: np.ndarray, eye_px: np.ndarray, mirrored: bool, jitter=None):
    """(crop [EYE_DIM, EYE_DIM] uint8 grey, matrix photo -> crop) of one eye.

    ``image``: grey, or BGR (converted around the eye only). ``jitter``: (shift [2] in eye
    widths, scale, degrees) for training, where the first pass's points are not exact."""
    centre, side, angle = eye_square(eye_px, mirrored)
    if jitter is not None:
        shift, scale, turn = jitter
        centre = centre + np.asarray(shift, dtype=np.float64) * side / EYE_SIDE
        side, angle = side * scale, angle + turn
    region, to_region = geometry.extract_region(
        image, centre, side, EYE_DIM, grey_from_bgr=image.ndim == 3,
        context=geometry.crop_context(1.0, angle))
    matrix = geometry.crop_matrix(centre, side, EYE_DIM, angle, flip=mirrored)
    crop = geometry.warp(region, geometry.compose(matrix, geometry.invert(to_region)), EYE_DIM)
    return crop, matrix


class EyeRefiner:
    """The eye model: both eyes of a face's 68 points looked at again (thread-safe: one
    interpreter per thread)."""

    def __init__(self, path=None, threads: int = 1):
        import threading

        self.path = Path(path or DEFAULT_EYE_MODEL)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: eye model not found (train_eyes.py makes it)")
        self.threads = threads
        self._local = threading.local()
        interpreter = self._interpreter()
        inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
        if (len(inputs) != 1 or list(inputs[0]["shape"]) != [1, EYE_DIM, EYE_DIM, 1]
                or len(outputs) != 1 or list(outputs[0]["shape"]) != [1, 12]):
            raise ValueError(f"{self.path}: not an eye model ({EYE_DIM}x{EYE_DIM} grey in, 6 points out)")

    def _interpreter(self):
        interpreter = getattr(self._local, "interpreter", None)
        if interpreter is None:
            from ai_edge_litert.interpreter import Interpreter

            try:
                interpreter = Interpreter(str(self.path), num_threads=self.threads)
                interpreter.allocate_tensors()
            except (ValueError, RuntimeError) as err:
                raise ValueError(f"{self.path}: not a TFLite model ({err})") from None
            self._local.interpreter = interpreter
        return interpreter

    def run_crop(self, crop: np.ndarray) -> np.ndarray:
        """Six points [6, 2] in crop pixels for one EYE_DIM crop (uint8 grey)."""
        interpreter = self._interpreter()
        detail = interpreter.get_input_details()[0]
        interpreter.set_tensor(detail["index"], geometry.gray_to_input(crop)[None])
        interpreter.invoke()
        out = interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).reshape(6, 2)
        if not np.all(np.isfinite(out)):
            raise ValueError(f"{self.path}: the eye model output non-finite points")
        return geometry.norm_to_px(out, EYE_DIM)

    def refine(self, image: np.ndarray, landmarks_px: np.ndarray) -> np.ndarray:
        """The 68 points with both eyes' six replaced by the eye model's, in photo pixels."""
        points = np.array(landmarks_px, dtype=np.float64, copy=True)
        for indices, mirrored in EYES:
            crop, matrix = eye_crop(image, points[indices], mirrored)
            points[indices] = geometry.transform_points(self.run_crop(crop), geometry.invert(matrix))
        return points


def write_metadata(model_path: Path, **info) -> None:
    Path(model_path).with_suffix(".json").write_text(json.dumps(
        {"eye_dim": EYE_DIM, "eye_side": EYE_SIDE, **info}, indent=1))
