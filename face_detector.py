"""Face detectors for predict.py: MediaPipe's BlazeFace (default) and OpenCV's Haar cascade.

    detector = make_detector("blazeface")            # range="auto" (short, then full range)
    detector = make_detector("blazeface", range="full")
    detector = make_detector("haar")
    detections = detector.detect(image_bgr)          # list[Detection], best first

BlazeFace runs MediaPipe's own TFLite models (models/face_detection_*.tflite, Apache-2.0,
see models/DETECTORS.md) under ai-edge-litert; everything around the network is here, in
NumPy and OpenCV, as MediaPipe's face detection graph does it: letterbox the photo to the
square input, SSD anchors, decode boxes and 6 keypoints, sigmoid scores, weighted
non-maximum suppression, and map back to the photo. No TensorFlow, no MediaPipe.

Each Detection carries the detector's own box and the box mapped onto the framing the
landmark model was trained with (dlib HOG-style boxes), plus the face's roll from the eye
keypoints, so that predict.py can cut an upright crop of a tilted head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

import geometry

MODELS_DIR = Path(__file__).resolve().parent / "models"

# BlazeFace keypoint order (MediaPipe's face detection models). "Right" is the person's.
KEYPOINT_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth_centre", "right_ear_tragion",
                  "left_ear_tragion")
RIGHT_EYE_KEYPOINT, LEFT_EYE_KEYPOINT = 0, 1

MEDIAPIPE_WHEEL = "mediapipe==0.10.14"


def how_to_get(file_name: str) -> str:
    """Where a BlazeFace model file comes from, for error messages."""
    return (f"it ships in the repository's models/ folder; to get it again: pip download "
            f"--no-deps {MEDIAPIPE_WHEEL} and extract mediapipe/modules/face_detection/{file_name} "
            f"from the wheel into models/ (see models/DETECTORS.md)")


class InputError(ValueError):
    """An input file or model is unusable; the message names the file and the fault."""


def make_interpreter(model_path: str, threads: int, model_content: bytes | None = None):
    """A TFLite interpreter from ai-edge-litert (or tf.lite when TensorFlow is installed), of
    the file ``model_path`` or, when given, of the flatbuffer ``model_content`` read from it."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tensorflow.lite import Interpreter  # TensorFlow happens to be installed
        except ImportError:
            raise InputError("no TFLite runtime: pip install ai-edge-litert "
                             "(or install TensorFlow)") from None
    if model_content is not None:
        return Interpreter(model_content=model_content, num_threads=threads)
    return Interpreter(model_path=model_path, num_threads=threads)


@dataclass
class Detection:
    """One face found in a photo (all coordinates in photo pixels, pixel centres 0-based;
    boxes are (x, y, w, h) with pixel-edge extent as in geometry.face_square)."""

    box_xywh: tuple                   # the detector's own box
    score: float                      # detector confidence in [0, 1] (1.0 for Haar: it gives none)
    keypoints_px: np.ndarray | None   # [6, 2] in KEYPOINT_NAMES order; None for Haar
    training_box_xywh: tuple          # box_xywh mapped onto the landmark model's framing
    roll_deg: float                   # in-plane tilt from the eye keypoints (0.0 for Haar)


def map_box_to_training(box_xywh, scale: float, shift_x: float, shift_y: float,
                        roll_deg: float = 0.0) -> tuple:
    """A detector's box -> a square box in the training convention: side sqrt(w h) * scale,
    centre moved by (shift_x w, shift_y h) in the face's own frame (turned by roll_deg)."""
    x, y, w, h = (float(v) for v in box_xywh)
    side = math.sqrt(w * h) * scale
    theta = math.radians(roll_deg)
    cos, sin = math.cos(theta), math.sin(theta)
    dx, dy = shift_x * w, shift_y * h
    cx = x + w / 2 + cos * dx - sin * dy
    cy = y + h / 2 + sin * dx + cos * dy
    return (cx - side / 2, cy - side / 2, side, side)


# ---------------------------------------------------------------------------------------
# BlazeFace: anchors, letterbox, decoding, weighted NMS
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BlazeFaceSpec:
    """One BlazeFace model and the options MediaPipe's graph runs it with
    (face_detection_{short,full}_range.pbtxt, face_detection.pbtxt)."""

    file_name: str
    input_dim: int            # square input, pixels
    strides: tuple            # SSD layers; consecutive equal strides share one feature map
    interpolated_anchor: bool  # interpolated_scale_aspect_ratio > 0: one more anchor per layer
    min_score: float          # min_score_thresh
    # Training-box mapping, fitted on the 300-W training faces with
    # python evaluate.py --data-dir ../shared/data/300w_subset --split train --fit-detector blazeface-<range>
    scale: float
    shift_x: float
    shift_y: float


BLAZEFACE_SPECS = {
    "short": BlazeFaceSpec("face_detection_short_range.tflite", 128, (8, 16, 16, 16), True, 0.5,
                           scale=0.982, shift_x=-0.003, shift_y=-0.031),  # 2012 of 2012 faces matched
    "full": BlazeFaceSpec("face_detection_full_range_sparse.tflite", 192, (4,), False, 0.6,
                          scale=0.921, shift_x=0.0, shift_y=0.016),  # 1955 of 2012 faces matched
}
NUM_COORDS = 16          # box (4) + 6 keypoints x (x, y)
SCORE_CLIP = 100.0       # score_clipping_thresh before the sigmoid
NMS_IOU = 0.3            # min_suppression_threshold, IoU, weighted


def ssd_anchor_centres(input_dim: int, strides, interpolated_anchor: bool) -> np.ndarray:
    """[A, 2] anchor centres (x, y) in [0, 1] of the input, in the model's output order.

    As MediaPipe's SsdAnchorsCalculator with fixed_anchor_size and one aspect ratio:
    consecutive layers of one stride share a feature map of ceil(input_dim / stride) cells,
    each cell holding (1 + interpolated_anchor) anchors per layer, row by row, anchor
    offset 0.5. All anchors have width and height 1.
    """
    centres, layer = [], 0
    while layer < len(strides):
        same = layer
        while same < len(strides) and strides[same] == strides[layer]:
            same += 1
        per_cell = (same - layer) * (2 if interpolated_anchor else 1)
        cells = math.ceil(input_dim / strides[layer])
        grid_y, grid_x = np.mgrid[0:cells, 0:cells]
        cell_centres = np.stack([(grid_x.ravel() + 0.5) / cells, (grid_y.ravel() + 0.5) / cells], 1)
        centres.append(np.repeat(cell_centres, per_cell, axis=0))
        layer = same
    return np.concatenate(centres).astype(np.float64)


def letterbox(image: np.ndarray, dim: int):
    """Fit a photo into a dim x dim square, keeping its aspect ratio, centred, black border.

    Returns ``(square, scale_xy, pad_xy)``: a photo edge coordinate X (pixel centres at
    i + 0.5) lands on square edge coordinate ``X * scale + pad``. Big photos are first
    halved by area averaging (exact 2x2 means, no aliasing) while they stay at least twice
    the target size, then resized linearly: OpenCV's area averaging at a fractional factor
    costs 30 times more. A halving drops the odd last row or column, if any; the returned
    scale accounts for it.
    """
    height, width = image.shape[:2]
    fit = dim / max(width, height)
    new_w, new_h = max(1, round(width * fit)), max(1, round(height * fit))
    halvings = 0
    while 2 * new_w <= image.shape[1] and 2 * new_h <= image.shape[0]:
        even_h, even_w = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
        image = cv2.resize(image[:even_h, :even_w], (even_w // 2, even_h // 2), interpolation=cv2.INTER_AREA)
        halvings += 1
    kept_w, kept_h = image.shape[1] * 2 ** halvings, image.shape[0] * 2 ** halvings  # photo pixels
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    pad_x, pad_y = (dim - new_w) // 2, (dim - new_h) // 2
    square = cv2.copyMakeBorder(resized, pad_y, dim - new_h - pad_y, pad_x, dim - new_w - pad_x,
                                cv2.BORDER_CONSTANT, value=0)
    return square, np.array([new_w / kept_w, new_h / kept_h]), np.array([pad_x, pad_y], np.float64)


def square_to_photo_points(points_norm: np.ndarray, dim: int, scale_xy, pad_xy) -> np.ndarray:
    """Points [..., 2] in [0, 1] of a letterboxed square (see letterbox) -> photo pixel
    centres. (Box corners are edges: add 0.5.)"""
    return (np.asarray(points_norm, np.float64) * dim - pad_xy) / scale_xy - 0.5


def decode(regressors: np.ndarray, logits: np.ndarray, anchors_xy: np.ndarray, input_dim: int,
           min_score: float):
    """Raw SSD outputs -> (boxes [N, 4] as x0, y0, x1, y1, keypoints [N, 6, 2], scores [N]),
    all in [0, 1] of the input, only anchors scoring at least min_score.

    regressors [A, 16]: box centre x, y, width, height, then 6 keypoints x, y, in input
    pixels relative to the anchor centre; logits [A] or [A, 1].
    """
    scores = 1.0 / (1.0 + np.exp(-np.clip(np.asarray(logits, np.float64).reshape(-1), -SCORE_CLIP, SCORE_CLIP)))
    keep = np.flatnonzero(scores >= min_score)
    raw = np.asarray(regressors, np.float64)[keep] / input_dim
    anchors = anchors_xy[keep]
    centre = raw[:, 0:2] + anchors
    half = raw[:, 2:4] / 2
    boxes = np.concatenate([centre - half, centre + half], axis=1)
    keypoints = raw[:, 4:NUM_COORDS].reshape(-1, 6, 2) + anchors[:, None, :]
    return boxes, keypoints, scores[keep]


def iou_one_to_many(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one box [4] (x0, y0, x1, y1) with each of boxes [N, 4]."""
    inter_wh = np.clip(np.minimum(box[2:], boxes[:, 2:]) - np.maximum(box[:2], boxes[:, :2]), 0, None)
    inter = inter_wh[:, 0] * inter_wh[:, 1]
    area = np.prod(np.clip(box[2:] - box[:2], 0, None))
    areas = np.prod(np.clip(boxes[:, 2:] - boxes[:, :2], 0, None), axis=1)
    union = area + areas - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray,
                 iou_threshold: float = NMS_IOU):
    """MediaPipe's weighted non-maximum suppression.

    Take the best remaining detection; every remaining one overlapping it by IoU >
    iou_threshold (itself included) joins its group and leaves the pool; the group becomes
    one detection whose box and keypoints are the score-weighted means of the group's and
    whose score is the best one's. boxes [N, 4], keypoints [N, K, 2], scores [N] ->
    the same arrays for the merged detections, best first.
    """
    order = np.argsort(-scores, kind="stable")
    merged_boxes, merged_points, merged_scores = [], [], []
    while order.size:
        top = order[0]
        overlap = iou_one_to_many(boxes[top], boxes[order]) > iou_threshold
        overlap[0] = True  # a zero-area box still belongs to its own group
        group, order = order[overlap], order[~overlap]
        weights = scores[group] / scores[group].sum()
        merged_boxes.append(weights @ boxes[group])
        merged_points.append(np.tensordot(weights, keypoints[group], axes=1))
        merged_scores.append(scores[top])
    count = len(merged_scores)
    return (np.reshape(merged_boxes, (count, 4)), np.reshape(merged_points, (count,) + keypoints.shape[1:]),
            np.asarray(merged_scores, np.float64))


class BlazeFaceModel:
    """One BlazeFace TFLite model with its decoding: photo -> raw detections."""

    def __init__(self, spec: BlazeFaceSpec, models_dir=MODELS_DIR, threads: int = 1):
        self.spec = spec
        self.path = Path(models_dir) / spec.file_name
        if not self.path.is_file():
            raise InputError(f"{self.path}: face detector model not found; {how_to_get(spec.file_name)}")
        try:
            self.interpreter = make_interpreter(str(self.path), threads)
            self.interpreter.allocate_tensors()
        except InputError:
            raise
        except Exception as err:  # noqa: BLE001 - the runtime's own error for a non-TFLite file
            raise InputError(f"{self.path}: not a TFLite model ({str(err).splitlines()[0]}); "
                             f"{how_to_get(spec.file_name)}") from None
        self.anchors = ssd_anchor_centres(spec.input_dim, spec.strides, spec.interpolated_anchor)
        inputs, outputs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        want_in = [1, spec.input_dim, spec.input_dim, 3]
        by_width = {int(o["shape"][-1]): o for o in outputs}
        if (len(inputs) != 1 or list(inputs[0]["shape"]) != want_in or len(outputs) != 2
                or set(by_width) != {NUM_COORDS, 1}
                or any(int(o["shape"][1]) != len(self.anchors) for o in outputs)):
            raise InputError(
                f"{self.path}: tensors {[list(i['shape']) for i in inputs]} -> "
                f"{[list(o['shape']) for o in outputs]}, expected {want_in} -> "
                f"[1, {len(self.anchors)}, {NUM_COORDS}] and [1, {len(self.anchors)}, 1] "
                f"(MediaPipe's {spec.file_name}); {how_to_get(spec.file_name)}")
        self.input_index = inputs[0]["index"]
        self.regressor_index = by_width[NUM_COORDS]["index"]
        self.score_index = by_width[1]["index"]

    def run(self, square_rgb: np.ndarray):
        """A dim x dim x 3 uint8 RGB square -> (regressors [A, 16], logits [A])."""
        tensor = square_rgb.astype(np.float32) / 127.5 - 1.0
        self.interpreter.set_tensor(self.input_index, tensor[None])
        self.interpreter.invoke()
        return (self.interpreter.get_tensor(self.regressor_index)[0],
                self.interpreter.get_tensor(self.score_index)[0, :, 0])

    def detect(self, image: np.ndarray, min_score: float | None = None):
        """A decoded photo (BGR, BGRA or grey, uint8) -> (boxes [N, 4] x0, y0, x1, y1 as photo
        edge coordinates, keypoints [N, 6, 2] in photo pixel centres, scores [N]) after
        weighted NMS, best first."""
        dim = self.spec.input_dim
        square, scale, pad = letterbox(image, dim)
        square = as_rgb(square)  # converting the small square costs less than the photo
        regressors, logits = self.run(square)
        threshold = self.spec.min_score if min_score is None else min_score
        boxes, keypoints, scores = decode(regressors, logits, self.anchors, dim, threshold)
        boxes, keypoints, scores = weighted_nms(boxes, keypoints, scores)
        corners = square_to_photo_points(boxes.reshape(-1, 2, 2), dim, scale, pad) + 0.5
        return corners.reshape(-1, 4), square_to_photo_points(keypoints, dim, scale, pad), scores


def as_rgb(image: np.ndarray) -> np.ndarray:
    """A decoded photo (BGR, BGRA or grey, uint8) as RGB for BlazeFace."""
    if image.dtype != np.uint8:
        raise InputError(f"face detector: expected an 8-bit image, got {image.dtype}")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2RGB)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    raise InputError(f"face detector: unsupported image shape {image.shape}")


def small_faces_beside(detections, large_boxes, min_width: float) -> list:
    """The detections (spec, box_xywh, keypoints, score) narrower than ``min_width`` whose
    box centre lies in none of ``large_boxes`` (x, y, w, h): faces beside the large ones, not
    a second box on one of them."""
    def inside(box, other):
        cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
        return other[0] <= cx <= other[0] + other[2] and other[1] <= cy <= other[1] + other[3]

    return [d for d in detections
            if d[1][2] < min_width and not any(inside(d[1], large) for large in large_boxes)]


class BlazeFaceDetector:
    """MediaPipe's BlazeFace, short range (128 px input: faces that fill a good part of the
    photo), full range (192 px: smaller faces too), or auto: the short range model first,
    and the full range one instead when the short range model finds nothing or a box
    narrower than SHORT_RANGE_MIN_WIDTH of the photo's longer side; when it finds only
    faces that wide, they are kept and the full range model adds the small faces beside
    them (small_faces_beside), so a group photo loses neither. benchmarks/detector.py: the
    short range model finds 97-100 % of faces from 12.5 % of the longer side up and none
    below 7.5 %; on faces near its limit it returns boxes far too large (about 13-17 % of the
    longer side for a 7.5 % face), hence the margin."""

    RANGES = ("short", "full", "auto")
    SHORT_RANGE_MIN_WIDTH = 0.2

    def __init__(self, range: str = "auto", threads: int = 1, min_score: float | None = None,
                 models_dir=MODELS_DIR):
        if range not in self.RANGES:
            raise InputError(f"blazeface range {range!r}: unknown, choose from {', '.join(self.RANGES)}")
        self.range = range
        self.name = "blazeface" if range == "auto" else f"blazeface-{range}"
        self.min_score = min_score
        self.models = [BlazeFaceModel(BLAZEFACE_SPECS[r], models_dir, threads)
                       for r in (("short", "full") if range == "auto" else (range,))]

    def _raw(self, image: np.ndarray):
        """[(spec, box_xywh, keypoints [6, 2], score)], best first (see the class docstring
        for which model's)."""
        if image.dtype != np.uint8:
            raise InputError(f"face detector: expected an 8-bit image, got {image.dtype}")
        min_width = self.SHORT_RANGE_MIN_WIDTH * max(image.shape[:2])
        large = []  # the short range model's faces, when they are all large
        for model in self.models:
            boxes, keypoints, scores = model.detect(image, self.min_score)
            found = [(model.spec, (b[0], b[1], b[2] - b[0], b[3] - b[1]), k, s)
                     for b, k, s in zip(boxes, keypoints, scores)]
            if model is self.models[-1]:
                return large + small_faces_beside(found, [d[1] for d in large], min_width) if large else found
            if len(scores) and np.all(boxes[:, 2] - boxes[:, 0] >= min_width):
                large = found  # kept; the full range model looks for small faces beside them
        return []

    def detect_raw(self, image: np.ndarray) -> list[tuple]:
        """The detector's own boxes (x, y, w, h), best first."""
        return [tuple(float(v) for v in box) for _, box, _, _ in self._raw(image)]

    def detect(self, image: np.ndarray) -> list[Detection]:
        detections = []
        for spec, box, keypoints, score in self._raw(image):
            roll = geometry.roll_from_eyes(keypoints[RIGHT_EYE_KEYPOINT], keypoints[LEFT_EYE_KEYPOINT])
            detections.append(Detection(
                box_xywh=tuple(float(v) for v in box), score=float(score), keypoints_px=keypoints,
                training_box_xywh=map_box_to_training(box, spec.scale, spec.shift_x, spec.shift_y, roll),
                roll_deg=roll))
        return detections


# ---------------------------------------------------------------------------------------
# Haar cascade
# ---------------------------------------------------------------------------------------

class HaarDetector:
    """OpenCV's frontal-face Haar cascade, with its boxes mapped onto the convention of the
    training boxes (dlib's HOG detector): a Haar box is larger and sits higher. The mapping
    (scale about the centre, then a shift in box sizes) was fitted with
    ``python evaluate.py --data-dir ../shared/data/300w_subset --split train --fit-detector
    haar`` on the 300-W training faces. It gives no keypoints and no roll."""

    name = "haar"
    # box_xywh -> (cx + dx*s, cy + dy*s, s*k): fitted, see the docstring.
    SCALE, SHIFT_X, SHIFT_Y = 0.899, -0.002, 0.069  # 1816 of 2012 faces matched
    MAX_SIDE = 1024  # detect on a downscaled copy of large photos

    def __init__(self, min_size: int = 24):
        cascade_path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
        self.cascade = cv2.CascadeClassifier(str(cascade_path))
        if self.cascade.empty():
            raise InputError(f"{cascade_path}: Haar cascade missing; install opencv-python-headless<5")
        self.min_size = min_size

    def detect_raw(self, image: np.ndarray) -> list[tuple]:
        """The cascade's own boxes (x, y, w, h), largest first."""
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
        shrink = min(1.0, self.MAX_SIDE / max(grey.shape[:2]))
        if min(grey.shape[:2]) * shrink < self.min_size:  # too thin for a face (and for resize)
            return []
        small = cv2.resize(grey, None, fx=shrink, fy=shrink, interpolation=cv2.INTER_AREA) if shrink < 1 else grey
        found = self.cascade.detectMultiScale(cv2.equalizeHist(small), scaleFactor=1.1, minNeighbors=5,
                                              minSize=(self.min_size, self.min_size))
        boxes = [tuple(float(v) / shrink for v in box) for box in found]
        return sorted(boxes, key=lambda b: -b[2] * b[3])

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces, largest first; score 1.0 (the cascade gives no confidence)."""
        return [Detection(box_xywh=box, score=1.0, keypoints_px=None,
                          training_box_xywh=self.to_training_box(box), roll_deg=0.0)
                for box in self.detect_raw(image)]

    @classmethod
    def to_training_box(cls, box_xywh) -> tuple:
        return map_box_to_training(box_xywh, cls.SCALE, cls.SHIFT_X, cls.SHIFT_Y)


# ---------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------

DETECTORS = {
    "blazeface": BlazeFaceDetector,
    "blazeface-short": lambda **kw: BlazeFaceDetector(range="short", **kw),
    "blazeface-full": lambda **kw: BlazeFaceDetector(range="full", **kw),
    "haar": HaarDetector,
}
DEFAULT_DETECTOR = "blazeface"


def make_detector(name: str = DEFAULT_DETECTOR, **options):
    """A detector by name: "blazeface" (options: range="short"|"full"|"auto", threads,
    min_score), "blazeface-short", "blazeface-full" or "haar" (min_size)."""
    if name not in DETECTORS:
        raise InputError(f"detector {name!r}: unknown, choose from {', '.join(DETECTORS)}")
    return DETECTORS[name](**options)
