"""A second, higher-resolution look at the eyes and the mouth.

The landmark model sees a whole face in 128 x 128 pixels: an eye is about 15 pixels wide there,
and the lid gap of a narrow eye one or two. A part model looks at one part at a time, cut from
the photo around the first pass's points of that part, turned level by its corners, and gives
those points again:

- ``eyes`` (``models/eyes.tflite``): each eye at 48 x 48 pixels (an eye about 24 wide), its six
  points; a left eye is mirrored so that both eyes look alike to the model.
- ``mouth``: the mouth at 64 x 64 pixels, its 20 points. ``train_parts.py --part mouth``
  trains it, but it does not ship: on the validation faces it did not beat the first pass
  (docs/training_notes.md).

``train_parts.py`` trains them; ``predict.py --refine-eyes`` uses ``models/eyes.tflite``,
replacing the first pass's eye points (the model card has the figures).

Runs on a Raspberry Pi: ai-edge-litert, OpenCV and NumPy only.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import geometry

MODELS_DIR = Path(__file__).resolve().parent / "models"

# The person's right eye, in the iBUG order: outer corner, upper lid (2), inner corner,
# lower lid (2). The left eye mirrored left-right, in the same roles and order.
RIGHT_EYE = np.array([36, 37, 38, 39, 40, 41])
LEFT_EYE_MIRRORED = np.array([45, 44, 43, 42, 47, 46])
MOUTH = np.arange(48, 68)


@dataclass(frozen=True)
class Part:
    name: str
    dim: int  # crop pixels
    side: float  # crop side, in part sizes (corner to corner, or the height where larger)
    groups: tuple  # ((indices into the 68 points, mirrored), ...): each cut and refined alone
    corners: tuple = (0, 3)  # positions, in a group, of its image-left and image-right corners
    use_height: bool = False  # the part's size is the larger of its width and its height
    # positions of a group's points in its mirror image, for training flips (None: no flips)
    flip_order: tuple | None = None

    @property
    def points(self) -> int:
        return len(self.groups[0][0])

    @property
    def default_model(self) -> Path:
        return MODELS_DIR / f"{self.name}.tflite"


EYES = Part("eyes", 48, 2.0, ((RIGHT_EYE, False), (LEFT_EYE_MIRRORED, True)))
MOUTH = Part("mouth", 64, 1.6, ((MOUTH, False),), corners=(0, 6), use_height=True,
             flip_order=tuple(int(i) - 48 for i in geometry.FLIP_PERMUTATION_68[48:68]))
PARTS = {part.name: part for part in (EYES, MOUTH)}


def part_square(part: Part, points_px: np.ndarray, mirrored: bool):
    """(centre, side, angle_deg) of a part's crop from a group's points (in the group's
    order): centred on the points' mean, ``part.side`` part sizes wide, turned so the two
    corners lie level. A mirrored group's first corner is on the image's right."""
    points_px = np.asarray(points_px, dtype=np.float64)
    first, second = points_px[part.corners[0]], points_px[part.corners[1]]
    left, right = (second, first) if mirrored else (first, second)
    angle = math.degrees(math.atan2(right[1] - left[1], right[0] - left[0]))
    size = float(np.linalg.norm(second - first))
    if part.use_height:
        theta = math.radians(angle)
        across = (points_px - points_px.mean(axis=0)) @ np.array([-math.sin(theta), math.cos(theta)])
        size = max(size, float(across.max() - across.min()))
    return points_px.mean(axis=0), part.side * max(size, 1.0), angle


def part_crop(part: Part, image: np.ndarray, points_px: np.ndarray, mirrored: bool, jitter=None,
              flip: bool = False):
    """(crop [dim, dim] uint8 grey, matrix photo -> crop) of one group of a part.

    ``image``: grey, or BGR (converted around the part only). ``jitter``: (shift [2] in part
    sizes, scale, degrees) for training, where the first pass's points are not exact;
    ``flip``: mirror the crop (training; the targets then follow ``part.flip_order``)."""
    centre, side, angle = part_square(part, points_px, mirrored)
    if jitter is not None:
        shift, scale, turn = jitter
        centre = centre + np.asarray(shift, dtype=np.float64) * side / part.side
        side, angle = side * scale, angle + turn
    region, to_region = geometry.extract_region(
        image, centre, side, part.dim, grey_from_bgr=image.ndim == 3,
        context=geometry.crop_context(1.0, angle))
    matrix = geometry.crop_matrix(centre, side, part.dim, angle, flip=mirrored != flip)
    crop = geometry.warp(region, geometry.compose(matrix, geometry.invert(to_region)), part.dim)
    return crop, matrix


class PartRefiner:
    """A part model: its points of a face's 68 looked at again (thread-safe: one interpreter
    per thread)."""

    def __init__(self, part: Part, path=None, threads: int = 1):
        self.part = part
        self.path = Path(path or part.default_model)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: {part.name} model not found (train_parts.py makes it)")
        self.threads = threads
        self._local = threading.local()
        interpreter = self._interpreter()
        inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
        if (len(inputs) != 1 or list(inputs[0]["shape"]) != [1, part.dim, part.dim, 1]
                or len(outputs) != 1 or list(outputs[0]["shape"]) != [1, 2 * part.points]):
            raise ValueError(f"{self.path}: not a {part.name} model ({part.dim}x{part.dim} grey in, "
                             f"{part.points} points out)")

    def _interpreter(self):
        interpreter = getattr(self._local, "interpreter", None)
        if interpreter is None:
            from face_detector import InputError, make_interpreter

            try:
                interpreter = make_interpreter(str(self.path), self.threads)
                interpreter.allocate_tensors()
            except InputError:  # no TFLite runtime: its own message says what to install
                raise
            except (ValueError, RuntimeError) as err:
                raise ValueError(f"{self.path}: not a TFLite model ({err})") from None
            self._local.interpreter = interpreter
        return interpreter

    def run_crop(self, crop: np.ndarray) -> np.ndarray:
        """The part's points [P, 2] in crop pixels for one crop (uint8 grey)."""
        interpreter = self._interpreter()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], geometry.gray_to_input(crop)[None])
        interpreter.invoke()
        out = interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).reshape(-1, 2)
        if not np.all(np.isfinite(out)):
            raise ValueError(f"{self.path}: the {self.part.name} model output non-finite points")
        return geometry.norm_to_px(out, self.part.dim)

    def refine(self, image: np.ndarray, landmarks_px: np.ndarray) -> np.ndarray:
        """The 68 points with the part's replaced by the part model's, in photo pixels."""
        points = np.array(landmarks_px, dtype=np.float64, copy=True)
        for indices, mirrored in self.part.groups:
            crop, matrix = part_crop(self.part, image, points[indices], mirrored)
            points[indices] = geometry.transform_points(self.run_crop(crop), geometry.invert(matrix))
        return points


def write_metadata(part: Part, model_path: Path, **info) -> None:
    Path(model_path).with_suffix(".json").write_text(json.dumps(
        {"part": part.name, "dim": part.dim, "side": part.side, **info}, indent=1))
