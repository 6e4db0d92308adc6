"""A second network's view of a face: MediaPipe's 468-point face mesh, mapped to the 68 iBUG
points.

The mesh (``models/face_mesh.tflite``: MediaPipe's ``face_landmark.tflite``, Apache-2.0) does not
follow the iBUG convention, so a ridge regression from its 468 points to the 68 annotated ones
(``models/mesh_to_68.npz``, fitted on the 300-W training faces by ``tools/mesh_teacher.py``) maps
it. Both point sets are expressed in a frame set by the mesh itself (its centre, eye line and
size), so the map does not depend on where a face sits in a photo. The two networks err
differently: the mean of the mapped mesh and the landmark model's points is more accurate than
either (``predict.py --with-mesh``; the model card has the figures).

Runs on a Raspberry Pi: ai-edge-litert, OpenCV and NumPy only.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np

import geometry
from config import NUM_LANDMARKS

MODELS_DIR = Path(__file__).resolve().parent / "models"
DEFAULT_MESH_MODEL = MODELS_DIR / "face_mesh.tflite"
DEFAULT_MESH_MAP = MODELS_DIR / "mesh_to_68.npz"
MESH_DIM = 192
MESH_POINTS = 468
# The mesh's outer eye corners: the person's right eye (image left), then the left eye.
MESH_RIGHT_EYE_OUTER, MESH_LEFT_EYE_OUTER = 33, 263
# MediaPipe's framing: a square 1.5x the face's extent, turned upright by the eye line.
MESH_CROP_SCALE = 1.5


class FaceMesh:
    """MediaPipe's face mesh (192x192 RGB in [0, 1] -> 468 x (x, y, z) in crop pixels). One
    interpreter: use one instance per thread."""

    def __init__(self, path=DEFAULT_MESH_MODEL, threads: int = 1):
        from face_detector import InputError, make_interpreter

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: face mesh model not found")
        try:
            self.interpreter = make_interpreter(str(path), threads)
            self.interpreter.allocate_tensors()
        except InputError:  # no TFLite runtime: its own message says what to install
            raise
        except (ValueError, RuntimeError) as err:
            raise ValueError(f"{path}: not a TFLite model ({err})") from None
        inputs, outputs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        points = [o["index"] for o in outputs if o["shape"][-1] == MESH_POINTS * 3]
        if len(inputs) != 1 or list(inputs[0]["shape"]) != [1, MESH_DIM, MESH_DIM, 3] or not points:
            raise ValueError(f"{path}: not MediaPipe's face mesh (input {MESH_DIM}x{MESH_DIM} RGB, "
                             f"{MESH_POINTS} x 3 points out)")
        self.input_index, self.points_index = inputs[0]["index"], points[0]

    def run_crop(self, crop_rgb: np.ndarray) -> np.ndarray:
        """[468, 3] in crop pixels for one 192x192 RGB uint8 crop."""
        tensor = (crop_rgb.astype(np.float32) / 255.0)[None]
        self.interpreter.set_tensor(self.input_index, tensor)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.points_index).reshape(MESH_POINTS, 3).copy()

    def _pass(self, image_bgr: np.ndarray, centre, side: float, roll_deg: float) -> np.ndarray:
        # As geometry.frame_face: only the context this crop reads, area-shrunk when large.
        region, to_region = geometry.extract_region(image_bgr, centre, side, MESH_DIM,
                                                    context=geometry.crop_context(1.0, roll_deg))
        matrix = geometry.crop_matrix(centre, side, MESH_DIM, roll_deg)
        crop = geometry.warp(region, geometry.compose(matrix, geometry.invert(to_region)), MESH_DIM)
        points = self.run_crop(cv2.cvtColor(crop, cv2.COLOR_BGR2RGB))
        to_image = geometry.invert(matrix)
        xy = geometry.transform_points(points[:, :2], to_image)
        return np.concatenate([xy, points[:, 2:] * side / MESH_DIM], axis=1)

    def run(self, image_bgr: np.ndarray, box_xywh, roll_deg: float = 0.0) -> np.ndarray:
        """[468, 3] in photo pixels: a first pass framed by the face box (turned upright by
        ``roll_deg``), a second framed by the first pass's own points (MediaPipe's tracking
        crop). A grey photo is given to the mesh as grey RGB."""
        if image_bgr.ndim == 2:
            image_bgr = cv2.cvtColor(image_bgr, cv2.COLOR_GRAY2BGR)
        x, y, w, h = (float(v) for v in box_xywh)
        first = self._pass(image_bgr, (x + w / 2 - 0.5, y + h / 2 - 0.5), MESH_CROP_SCALE * max(w, h), roll_deg)
        centre, side, roll = mesh_frame_box(first[:, :2])
        return self._pass(image_bgr, centre, MESH_CROP_SCALE * side, roll)


def mesh_roll(mesh_xy: np.ndarray) -> float:
    return geometry.roll_from_eyes(mesh_xy[MESH_RIGHT_EYE_OUTER], mesh_xy[MESH_LEFT_EYE_OUTER])


def mesh_frame_box(mesh_xy: np.ndarray):
    """(centre, side, roll_deg) of the mesh's box turned upright by its eye line."""
    roll = mesh_roll(mesh_xy)
    theta = math.radians(roll)
    to_upright = np.array([[math.cos(theta), math.sin(theta)], [-math.sin(theta), math.cos(theta)]])
    pivot = mesh_xy.mean(axis=0)
    upright = (mesh_xy - pivot) @ to_upright.T
    low, high = upright.min(axis=0), upright.max(axis=0)
    centre = (low + high) / 2 @ to_upright + pivot
    return centre, float(max(high - low)), roll


def mesh_frame(mesh_xy: np.ndarray):
    """(centre [2], rotation [2, 2], scale): the similarity frame of a mesh. A point p in the
    photo is ``(p - centre) @ rotation.T / scale`` in it."""
    centre = mesh_xy.mean(axis=0)
    theta = math.radians(mesh_roll(mesh_xy))
    rotation = np.array([[math.cos(theta), math.sin(theta)], [-math.sin(theta), math.cos(theta)]])
    scale = float(np.sqrt(((mesh_xy - centre) ** 2).sum(axis=1).mean()))
    return centre, rotation, scale


def to_frame(points_xy, frame):
    centre, rotation, scale = frame
    return (np.asarray(points_xy, dtype=np.float64) - centre) @ rotation.T / scale


def from_frame(points_xy, frame):
    centre, rotation, scale = frame
    return np.asarray(points_xy, dtype=np.float64) * scale @ rotation + centre


def mesh_features(mesh: np.ndarray, frame) -> np.ndarray:
    """[468 * 3]: the mesh's x, y in its own frame and its depth in the same scale."""
    xy = to_frame(mesh[:, :2], frame)
    return np.concatenate([xy.ravel(), mesh[:, 2] / frame[2]])


def fit_ridge(features: np.ndarray, targets: np.ndarray, alpha: float) -> dict:
    """Ridge regression with an unpenalised intercept. features [N, F], targets [N, T]."""
    x_mean, y_mean = features.mean(axis=0), targets.mean(axis=0)
    x, y = features - x_mean, targets - y_mean
    gram = x.T @ x + alpha * np.eye(x.shape[1])
    weights = np.linalg.solve(gram, x.T @ y)
    return {"weights": weights, "x_mean": x_mean, "y_mean": y_mean}


def apply_ridge(ridge: dict, features: np.ndarray) -> np.ndarray:
    return (features - ridge["x_mean"]) @ ridge["weights"] + ridge["y_mean"]


class MeshTo68:
    """The fitted map: a mesh in a photo -> 68 iBUG points in the same photo."""

    def __init__(self, ridge: dict):
        self.ridge = ridge

    @classmethod
    def load(cls, path) -> "MeshTo68":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: mesh-to-68 map not found")
        try:
            with np.load(path, allow_pickle=False) as data:
                ridge = {k: data[k].astype(np.float64) for k in ("weights", "x_mean", "y_mean")}
        except (OSError, ValueError, KeyError) as err:
            raise ValueError(f"{path}: not a mesh-to-68 map ({err})") from None
        features, outputs = MESH_POINTS * 3, 2 * NUM_LANDMARKS
        if (ridge["weights"].shape != (features, outputs) or ridge["x_mean"].shape != (features,)
                or ridge["y_mean"].shape != (outputs,) or not all(np.all(np.isfinite(v)) for v in ridge.values())):
            raise ValueError(f"{path}: not a mesh-to-68 map (wrong shapes or non-finite values)")
        return cls(ridge)

    def save(self, path, **meta) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **{k: v.astype(np.float32) for k, v in self.ridge.items()}, meta=json.dumps(meta))

    def __call__(self, mesh: np.ndarray) -> np.ndarray:
        frame = mesh_frame(mesh[:, :2])
        mapped = apply_ridge(self.ridge, mesh_features(mesh, frame)[None])[0]
        return from_frame(mapped.reshape(NUM_LANDMARKS, 2), frame)




class MeshLandmarks:
    """The face mesh and its map: 68 iBUG points for a face box, in photo pixels."""

    def __init__(self, mesh_model=None, mesh_map=None, threads: int = 1):
        self.mesh = FaceMesh(mesh_model or DEFAULT_MESH_MODEL, threads)
        self.mapper = MeshTo68.load(mesh_map or DEFAULT_MESH_MAP)

    def predict(self, image: np.ndarray, box_xywh, roll_deg: float = 0.0) -> np.ndarray:
        return self.mapper(self.mesh.run(image, box_xywh, roll_deg))


def average_with_mesh(points_px: np.ndarray, mesh_points_px: np.ndarray) -> np.ndarray:
    """The two networks' mean, [68, 2]."""
    return (np.asarray(points_px, dtype=np.float64) + np.asarray(mesh_points_px, dtype=np.float64)) / 2.0
