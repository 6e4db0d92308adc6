"""Find faces in photos and put 68 landmarks on each: runs on a Raspberry Pi.

    python predict.py imgs/test_image.jpeg                 # writes out/test_image_landmarks.png + .json
    python predict.py a.jpg b.png --json                   # also prints the JSON
    python predict.py photo.jpg --box 120,80,200,200       # skip detection, use this face box
    python predict.py photos/ --no-draw                    # only the JSON, no annotated images
    python predict.py --video 0                            # camera 0: tracked faces, frames/s
    python predict.py --video clip.mp4 --no-draw           # only the per-frame JSON lines
    python predict.py --video picamera2 --on-event CMD     # Pi camera: events logged, CMD run (docs/monitor.md)

Imports only NumPy, OpenCV, Pillow and ai-edge-litert (or tf.lite when TensorFlow happens
to be installed). The face is framed by geometry.frame_face, exactly as in training.

Exit status: 0 when every image had a face, 3 when some image had none, 2 when an input or
the model could not be used.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import re
import stat
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

MAX_PIXELS = 80_000_000  # a 16-bit 80 MP photo is already 480 MB decoded
# Largest photo file read: a camera's 80 MP JPEG is 20-40 MB; beyond this a file costs its
# size in memory before its header could refuse it.
MAX_FILE_MB = 100
# A second wall behind decode_image's header check: OpenCV's own decoders refuse larger
# images. OpenCV reads this variable once, when it is loaded, so it is set before cv2 is.
_opencv_limit = os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS", "")
if not (_opencv_limit.isdigit() and 0 < int(_opencv_limit) <= MAX_PIXELS):
    os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"] = str(MAX_PIXELS)

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, UnidentifiedImageError  # noqa: E402

import config  # noqa: E402
import face_measures  # noqa: E402
import parts  # noqa: E402
import face_mesh  # noqa: E402
import geometry  # noqa: E402
from face_detector import (DEFAULT_DETECTOR, DETECTORS, Detection, HaarDetector, InputError,  # noqa: E402, F401
                           make_detector, make_interpreter)
import tracking

MODELS_DIR = Path(__file__).resolve().parent / "models"
DEFAULT_MODEL = MODELS_DIR / "landmarks_int8.tflite"
# Model output, in crop coordinates ([-0.5, 0.5] is the crop): a point further than this
# from the crop centre is not a landmark but a broken model.
MAX_OUTPUT_NORM = 2.0
EXIT_OK, EXIT_BAD_INPUT, EXIT_NO_FACE = 0, 2, 3

# Lines of the 68-point outline: (first, last, closed).
OUTLINE_68 = ((0, 16, False), (17, 21, False), (22, 26, False), (27, 30, False), (31, 35, False),
              (36, 41, True), (42, 47, True), (48, 59, True), (60, 67, True))


class ModelOutputError(InputError):
    """The model answered with non-finite or absurd coordinates: the model, not the photo,
    is at fault; the message names the model."""

    def __init__(self, model_path: Path, fault: str):
        super().__init__(f"{model_path}: {fault}")
        self.model_path, self.fault = Path(model_path), fault


# ---------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------

def load_image(path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A photo file as 8-bit BGR, turned upright by its EXIF orientation (as a viewer shows
    it). Grey, RGBA and 16-bit files are converted; anything else gets an InputError naming it.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not an image")
    try:
        data = read_photo_file(path)
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror})") from None
    return decode_image(data, str(path), max_pixels)


def read_photo_file(path: Path, max_bytes: int = MAX_FILE_MB * 1024 * 1024) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``; InputError, before reading, for
    anything else (a FIFO would block, a device never ends, a huge file fills memory)."""
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"{path}: not a regular file (a pipe, device or socket); give a photo file")
    if info.st_size > max_bytes:
        raise InputError(f"{path}: file too large ({info.st_size / 2**20:.0f} MB; the limit is "
                         f"{max_bytes / 2**20:.0f} MB)")
    with path.open("rb") as file:
        data = file.read(max_bytes + 1)  # the file may have grown since stat
    if len(data) > max_bytes:
        raise InputError(f"{path}: file too large (the limit is {max_bytes / 2**20:.0f} MB)")
    return data


def decode_image(data: bytes, name: str = "image", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Encoded image bytes (a file's or an upload's) as 8-bit BGR; see load_image."""
    if not data:
        raise InputError(f"{name}: empty file")
    try:  # the header alone: refuse huge images before decoding them
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
    except Image.DecompressionBombError:  # Pillow's own limit (~179 MP) stops it before ours
        raise InputError(f"{name}: image too large (the limit is {max_pixels / 1e6:.0f} MP)") from None
    except (UnidentifiedImageError, OSError, ValueError):
        # OpenCV reads formats Pillow does not (Radiance .hdr, OpenEXR, PFM): it would decode
        # them in full before anyone knew their size, so they are refused.
        raise InputError(f"{name}: not an image whose size can be read before decoding "
                         "(corrupt, or a format other than JPEG, PNG, BMP, WebP, TIFF, GIF)") from None
    if width * height > max_pixels:
        raise InputError(f"{name}: image too large ({width}x{height} pixels; the limit is "
                         f"{max_pixels / 1e6:.0f} MP)")
    # IMREAD_COLOR: 3-channel 8-bit BGR from grey/RGBA/16-bit, EXIF orientation applied.
    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:  # OPENCV_IO_MAX_IMAGE_PIXELS, or a decoder's own complaint
        image = None
    if image is None:
        raise InputError(f"{name}: not an image OpenCV can read (corrupt or unsupported format)")
    return image


# ---------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------

@dataclass
class FacePrediction:
    """One face's landmarks, as predict.py, app.py and the video tracker report them."""

    box_xywh: tuple  # the training-convention box that framed the face, photo pixels
    landmarks_px: np.ndarray  # [68, 2] photo pixels
    landmark_confidence: np.ndarray | None  # [68] in [0, 1]; None: the model has no such output
    score: float | None  # face score in [0, 1] (face_score); None likewise
    roll_deg: float = 0.0  # the roll the crop was corrected by (geometry.roll_from_eyes)


def face_score(landmark_confidence) -> float | None:
    """A face's score from its points' confidences [68]: their mean. Near 1 on real faces,
    under FACE_SCORE_THRESHOLD when the crop holds no face (or only part of one)."""
    if landmark_confidence is None:
        return None
    return float(np.mean(landmark_confidence))


# Below this face score a crop is taken to hold no face (see models/README.md for how the
# scores of faces and of non-face crops fall).
FACE_SCORE_THRESHOLD = 0.5


def load_mesh(threads: int = 1):
    """face_mesh.MeshLandmarks from the shipped files; InputError naming the file at fault."""
    try:
        return face_mesh.MeshLandmarks(threads=threads)
    except (FileNotFoundError, ValueError) as err:
        raise InputError(str(err)) from None


def load_part_refiners(names, threads: int = 1) -> list:
    """parts.PartRefiner for each part named ("eyes", "mouth") from the shipped files;
    InputError naming the file at fault."""
    try:
        return [parts.PartRefiner(parts.PARTS[name], threads=threads) for name in names]
    except (FileNotFoundError, ValueError) as err:
        raise InputError(str(err)) from None


def keep_faces(predictions: list["FacePrediction"]) -> list["FacePrediction"]:
    """The detections the landmark model takes for faces: score at least FACE_SCORE_THRESHOLD
    (all of them for a model without a confidence output)."""
    return [p for p in predictions if p.score is None or p.score >= FACE_SCORE_THRESHOLD]


def refined_parts(args) -> list[str]:
    """The parts that --refine-eyes asks for."""
    return ["eyes"] if args.refine_eyes else []


def metadata_path(model_path) -> Path:
    return Path(model_path).with_suffix(".json")


class LandmarkModel:
    """A TFLite landmark model and the framing it was trained with (from the JSON file
    written beside it by export_tflite.py).

    ``predict(image, boxes)`` is thread-safe: each thread gets its own interpreter.
    """

    def __init__(self, model_path=DEFAULT_MODEL, threads: int = 1, flip_average: bool = False,
                 refine: bool = False, mesh=None, part_refiners=()):
        self.path = Path(model_path)
        if self.path.is_dir():
            raise InputError(f"{self.path}: is a folder, not a model file (give a .tflite file)")
        if not self.path.is_file():
            hint = (" (train and export one: python train.py, then python export_tflite.py)"
                    if self.path == DEFAULT_MODEL else "")
            raise InputError(f"{self.path}: model file not found{hint}")
        meta_file = metadata_path(self.path)
        if not meta_file.is_file():
            raise InputError(f"{meta_file}: framing metadata missing; export_tflite.py writes it "
                             f"beside {self.path.name}")
        try:
            self.metadata = json.loads(meta_file.read_text())
            framing = self.metadata["framing"]
            self.image_dim = int(framing["image_dim"])
            self.crop_margin = float(framing["crop_margin"])
            self.crop_shift_y = float(framing["crop_shift_y"])
        except (ValueError, KeyError, TypeError) as err:
            raise InputError(f"{meta_file}: malformed metadata ({type(err).__name__}: {err})") from None
        fault = config.framing_fault(self.image_dim, self.crop_margin, self.crop_shift_y)
        if fault:
            raise InputError(f"{meta_file}: unusable framing: {fault}")
        try:  # read once: a file replaced or deleted later changes nothing in this process
            self._content = self.path.read_bytes()
        except OSError as err:
            raise InputError(f"{self.path}: cannot read ({err.strerror})") from None
        self.threads = threads
        self.flip_average = flip_average
        self.refine = refine
        self.mesh = mesh  # a face_mesh.MeshLandmarks to average with, or None
        self.part_refiners = tuple(part_refiners)  # parts.PartRefiner: a second look at eyes, mouth
        self._local = threading.local()
        self._check(self._interpreter())

    def _interpreter(self):
        interpreter = getattr(self._local, "interpreter", None)
        if interpreter is None:
            try:
                interpreter = make_interpreter(str(self.path), self.threads, self._content)
                interpreter.allocate_tensors()
            except InputError:
                raise
            except Exception as err:  # noqa: BLE001 - the runtime's own error for a non-TFLite file
                raise InputError(f"{self.path}: not a TFLite model ({str(err).splitlines()[0]})") from None
            self._local.interpreter = interpreter
        return interpreter

    def _check(self, interpreter) -> None:
        inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
        want_in = [1, self.image_dim, self.image_dim, 1]
        if len(inputs) != 1 or list(inputs[0]["shape"]) != want_in:
            raise InputError(f"{self.path}: input shape {[i['shape'].tolist() for i in inputs]}, "
                             f"expected {want_in} (a 68-point landmark model from export_tflite.py)")
        shapes = [o["shape"].tolist() for o in outputs]
        points, confidence = [1, 2 * geometry.NUM_LANDMARKS], [1, geometry.NUM_LANDMARKS]
        if shapes not in ([points], [points, confidence], [confidence, points]):
            raise InputError(f"{self.path}: output shapes {shapes}, expected {points} (landmarks) "
                             f"and optionally {confidence} (per-point confidence)")
        self.has_confidence = len(outputs) == 2
        # Every thread's interpreter holds the same model: its tensors' details, read once.
        self._input_detail = inputs[0]
        self._points_detail = next(o for o in outputs if o["shape"][-1] == 2 * geometry.NUM_LANDMARKS)
        self._confidence_detail = next((o for o in outputs if o["shape"][-1] == geometry.NUM_LANDMARKS), None)

    @staticmethod
    def _output(interpreter, detail) -> np.ndarray:
        result = interpreter.get_tensor(detail["index"])[0]
        if detail["dtype"] != np.float32:
            scale, zero = detail["quantization"]
            result = (result.astype(np.float32) - zero) * scale
        return result

    def run_with_confidence(self, crop_input: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """One framed crop (D x D x 1 float32 in [-1, 1]) -> (68 x 2 landmarks in crop pixels,
        68 confidences in [0, 1], or None for a model exported without them)."""
        interpreter = self._interpreter()
        inp = self._input_detail
        tensor = crop_input[None].astype(np.float32)
        if inp["dtype"] != np.float32:
            scale, zero = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            tensor = np.clip(np.rint(tensor / scale + zero), info.min, info.max).astype(inp["dtype"])
        interpreter.set_tensor(inp["index"], tensor)
        interpreter.invoke()
        points = self._output(interpreter, self._points_detail)
        confidence = (None if self._confidence_detail is None
                      else self._output(interpreter, self._confidence_detail).astype(np.float64))
        points, confidence = self.checked_output(points, confidence)
        return geometry.norm_to_px(points.reshape(-1, 2), self.image_dim), confidence

    def run(self, crop_input: np.ndarray) -> np.ndarray:
        """One framed crop (D x D x 1 float32 in [-1, 1]) -> 68 x 2 landmarks in crop pixels."""
        return self.run_with_confidence(crop_input)[0]

    def predict_face(self, image: np.ndarray, box_xywh, roll_deg: float = 0.0) -> "FacePrediction":
        """One face: its box (training convention, photo pixels) and, optionally, the roll of
        the face in the photo (degrees, geometry.roll_from_eyes), undone before cropping so the
        model sees an upright face. Points are mapped back to the photo.

        With ``refine``, a second pass is framed by the box of the first pass's points (at the
        same roll) and the two are averaged: a detector's box frames a face less consistently
        than its own points do (model card: -0.15 NME points on validation, twice the time)."""
        points, confidence = self._predict_framed(image, box_xywh, roll_deg)
        if self.refine:
            second_box = geometry.box_from_landmarks_upright(points, roll_deg)
            second, second_conf = self._predict_framed(image, second_box, roll_deg)
            points = (points + second) / 2
            if confidence is not None:
                confidence = (confidence + second_conf) / 2
        if self.mesh is not None:  # --with-mesh: the mean with MediaPipe's mesh, mapped to 68 points
            points = face_mesh.average_with_mesh(points, self.mesh.predict(image, box_xywh, roll_deg))
        for refiner in self.part_refiners:  # --refine-eyes: a closer look at each eye
            points = refiner.refine(image, points)
        return FacePrediction(
            box_xywh=tuple(float(v) for v in box_xywh),
            landmarks_px=points,
            landmark_confidence=confidence,
            score=face_score(confidence),
            roll_deg=float(roll_deg))

    def _predict_framed(self, image: np.ndarray, box_xywh, roll_deg: float):
        """(68 x 2 points in photo pixels, 68 confidences or None) from one framing of a face."""
        # A colour photo is converted to grey only around this face (the same pixels).
        crop, matrix = geometry.frame_face_upright(image, box_xywh, self.image_dim, self.crop_margin,
                                                   self.crop_shift_y, roll_deg, grey_from_bgr=image.ndim == 3)
        points, confidence = self.run_with_confidence(geometry.gray_to_input(crop))
        if self.flip_average:  # test-time flip: average with the mirrored crop's prediction
            mirrored, mirrored_conf = self.run_with_confidence(geometry.gray_to_input(crop[:, ::-1].copy()))
            points = (points + geometry.unmirror_landmarks(mirrored, self.image_dim)) / 2
            if confidence is not None:
                confidence = (confidence + mirrored_conf[geometry.FLIP_PERMUTATION_68]) / 2
        return geometry.transform_points(points, geometry.invert(matrix)), confidence

    def checked_output(self, output_norm: np.ndarray, confidence: np.ndarray | None = None):
        """The model's [136] points in crop coordinates and its [68] confidences (or None),
        as they are; ModelOutputError when either is non-finite or a point lies far outside
        the crop (a broken or mis-converted model)."""
        if not np.all(np.isfinite(output_norm)):
            raise ModelOutputError(self.path, "the model output non-finite coordinates "
                                   f"({np.count_nonzero(~np.isfinite(output_norm))} of {output_norm.size})")
        worst = float(np.abs(output_norm).max())
        if worst > MAX_OUTPUT_NORM:
            raise ModelOutputError(self.path, f"the model output a coordinate of {worst:.3g} crop "
                                   f"sides from the centre (at most {MAX_OUTPUT_NORM:g} is plausible)")
        if confidence is not None and not np.all(np.isfinite(confidence)):
            raise ModelOutputError(self.path, "the model output non-finite confidences "
                                   f"({np.count_nonzero(~np.isfinite(confidence))} of {confidence.size})")
        return output_norm, confidence

    def predict_box(self, image: np.ndarray, box_xywh) -> np.ndarray:
        """68 x 2 landmarks in the image's pixels for one face box."""
        return self.predict_face(image, box_xywh).landmarks_px

    def predict_detections(self, image: np.ndarray, detections) -> list[FacePrediction]:
        """One FacePrediction per face_detector.Detection: framed by its training-convention
        box, the crop turned upright by its roll."""
        return [self.predict_face(image, d.training_box_xywh, d.roll_deg) for d in detections]

    def predict(self, image: np.ndarray, boxes) -> list[FacePrediction]:
        return [self.predict_face(image, box) for box in boxes]


# ---------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------

def draw_landmarks(image_bgr: np.ndarray, faces: list[dict]) -> np.ndarray:
    canvas = image_bgr.copy()
    thickness = max(1, round(max(canvas.shape[:2]) / 500))
    for face in faces:
        x, y, w, h = face["box"]
        cv2.rectangle(canvas, (round(x), round(y)), (round(x + w), round(y + h)), (255, 160, 0), thickness)
        points = np.asarray(face["landmarks"], dtype=np.float64)
        for first, last, closed in OUTLINE_68:
            line = np.round(points[first:last + 1]).astype(np.int32)
            cv2.polylines(canvas, [line], closed, (0, 220, 0), thickness, cv2.LINE_AA)
        for px, py in points:
            cv2.circle(canvas, (round(px), round(py)), thickness + 1, (0, 0, 255), -1, cv2.LINE_AA)
    return canvas


def faces_json(predictions: list[FacePrediction]) -> list[dict]:
    """Per face: ``box`` (x, y, w, h), ``score``, ``landmarks`` (68 [x, y] in photo pixels) and
    ``landmark_confidence`` (68 values in [0, 1]); the last two null without a confidence output."""
    return [{"box": [round(float(v), 2) for v in face.box_xywh],
             "score": None if face.score is None else round(face.score, 4),
             "landmarks": [[round(float(px), 2), round(float(py), 2)] for px, py in face.landmarks_px],
             "landmark_confidence": (None if face.landmark_confidence is None
                                     else [round(float(c), 4) for c in face.landmark_confidence])}
            for face in predictions]


def parse_box(text: str) -> tuple:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4 or not all(math.isfinite(v) for v in values) or values[2] <= 0 or values[3] <= 0:
        raise argparse.ArgumentTypeError(f"--box wants four finite numbers x,y,w,h with w, h > 0, "
                                         f"got {text!r}")
    return values


# Largest face box side, in multiples of the photo's longer side: past that the crop is
# mostly padding, and framing it would cost memory for nothing.
MAX_BOX_SIDE_RATIO = 2.0


def check_box(box_xywh, image_shape, name: str) -> tuple:
    """``box_xywh`` if it can frame a face in a photo of ``image_shape``; InputError if it
    does not overlap the photo or dwarfs it."""
    x, y, w, h = box_xywh
    height, width = image_shape[:2]
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        raise InputError(f"{name}: --box {x:g},{y:g},{w:g},{h:g} does not overlap the "
                         f"{width}x{height} photo")
    if max(w, h) > MAX_BOX_SIDE_RATIO * max(width, height):
        raise InputError(f"{name}: --box {x:g},{y:g},{w:g},{h:g} is more than "
                         f"{MAX_BOX_SIDE_RATIO:g} times the size of the {width}x{height} photo")
    return box_xywh


def join_negative_box(argv: list[str]) -> list[str]:
    """``--box -50,10,100,100`` as ``--box=-50,10,100,100``: argparse takes a value that
    starts with '-' (and is not one plain number) for an option."""
    joined, index = [], 0
    while index < len(argv):
        if argv[index] == "--box" and index + 1 < len(argv) and re.fullmatch(r"-[\d.].*", argv[index + 1]):
            joined.append(f"--box={argv[index + 1]}")
            index += 2
        else:
            joined.append(argv[index])
            index += 1
    return joined


def output_stems(files, out_dir: Path) -> list[Path]:
    """For each input, the path its ``.png`` and ``.json`` are written to, less the suffix:
    ``<out>/<whole stem>_landmarks``, with ``-2``, ``-3``... added where two inputs share a
    stem (``a.jpg`` and ``a.png``, ``d1/x.jpg`` and ``d2/x.jpg``) or where the name would be
    one of the inputs themselves: no output overwrites another, nor an input."""
    inputs = {os.path.realpath(p) for p in files}  # realpath: a symlinked --out is seen through
    taken, stems = set(), []
    for path in files:
        base, number = f"{Path(path).stem}_landmarks", 1
        while True:
            stem = out_dir / (base if number == 1 else f"{base}-{number}")
            outputs = {os.path.realpath(f"{stem}{suffix}") for suffix in (".png", ".json")}
            if not outputs & (taken | inputs):
                break
            number += 1
        taken |= outputs
        stems.append(stem)
    return stems


MAX_THREADS = 64  # far more than a Pi (or most machines) has cores; TFLite crashes on huge counts


def thread_count(text: str) -> int:
    """--threads: a whole number from 1 to MAX_THREADS."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_THREADS:
        raise argparse.ArgumentTypeError(f"wants a whole number from 1 to {MAX_THREADS}, got {text!r}")
    return value


def positive_number(what: str):
    """An argparse type: a finite number above 0, refused as ``what`` (e.g. "a size in MB")."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(f"wants {what} above 0, got {text!r}")
        return value
    return parse


focal_length = positive_number("a focal length in pixels")  # --focal-px


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"wants a whole number of at least 1, got {text!r}")
    return value


def image_record(name: str, image: np.ndarray, predictions: list[FacePrediction],
                 measure_options: face_measures.MeasureOptions | None = None) -> dict:
    """The JSON record of one image (``predict.py --json``; app.py answers the same;
    docs/json_schema.md): each face with its pose, eyes and mouth (face_measures)."""
    size = (image.shape[1], image.shape[0])
    faces = [{**face, **face_measures.measure_face(prediction.landmarks_px, size, measure_options)}
             for face, prediction in zip(faces_json(predictions), predictions)]
    return {"image": name, "width": image.shape[1], "height": image.shape[0], "faces": faces}


def annotate_image(path, model: LandmarkModel, detector, box=None,
                   measure_options: face_measures.MeasureOptions | None = None) -> tuple[dict, np.ndarray]:
    """Detect (or take `box`) and predict: (the JSON record, the decoded image)."""
    image = load_image(path)
    predictions = (model.predict(image, [check_box(box, image.shape, str(path))]) if box
                   else keep_faces(model.predict_detections(image, detector.detect(image))))
    return image_record(str(path), image, predictions, measure_options), image


# ---------------------------------------------------------------------------------------
# Video
# ---------------------------------------------------------------------------------------

def run_video(source: str, model: LandmarkModel, detector, out_dir: Path, max_frames: int = 0,
              draw: bool = True, options: tracking.TrackerOptions | None = None,
              measure_options: face_measures.MeasureOptions | None = None,
              blink_options: face_measures.BlinkOptions | None = None, output_options=None) -> int:
    """Track the faces of a video file or camera: monitor.run_video (docs/monitor.md)."""
    import monitor  # here, not at the top: monitor imports this module

    return monitor.run_video(source, model, detector, out_dir, max_frames, draw, options, measure_options,
                             blink_options, output_options)


# ---------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------

def make_output_folder(folder: Path, flag: str) -> None:
    """Create the output folder given by ``flag`` (with its parents); InputError naming the
    flag and the folder when it is a file or cannot be created."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise InputError(f"{flag} {folder}: is a file, not a folder") from None
    except OSError as err:
        raise InputError(f"{flag} {folder}: cannot create the folder ({err.strerror})") from None


def write_outputs(png_path: Path, json_path: Path, annotated: np.ndarray | None, record: dict) -> None:
    """The annotated image (unless None: --no-draw) and the JSON record; InputError naming
    the file that could not be written."""
    if annotated is not None:
        try:
            written = cv2.imwrite(str(png_path), annotated)
        except cv2.error:
            written = False
        if not written:
            raise InputError(f"{png_path}: could not write the annotated image")
    try:
        json_path.write_text(json.dumps(record, indent=1))
    except OSError as err:
        raise InputError(f"{json_path}: could not write ({err.strerror})") from None


def expand_inputs(paths) -> tuple[list[Path], list[str]]:
    """Files as given; directories expanded to the images inside. Returns (files, errors)."""
    files, errors = [], []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in
                           (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"))
            if not found:
                errors.append(f"{path}: directory holds no images")
            files.extend(found)
        else:
            files.append(path)
    return files, errors


def main(argv=None) -> int:
    import monitor  # here, not at the top: monitor imports this module

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("images", nargs="*", help="image files or folders of images")
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="a .tflite from export_tflite.py")
    parser.add_argument("--out", default="out", help="folder for annotated images and JSON")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    parser.add_argument("--box", type=parse_box, help="face box x,y,w,h: skip detection")
    parser.add_argument("--detector", choices=sorted(DETECTORS), default=DEFAULT_DETECTOR,
                        help="face detector (blazeface: the short range model, or the full range one for small faces; see models/DETECTORS.md)")
    parser.add_argument("--threads", type=thread_count, default=1, help="TFLite interpreter threads")
    parser.add_argument("--flip-average", action="store_true",
                        help="average with the mirrored face's prediction (2x time, a bit more accurate)")
    parser.add_argument("--refine", action="store_true",
                        help="a second pass framed by the first pass's points, averaged with it (2x time, "
                        "more accurate on photos; in video the tracker already frames by the last points)")
    parser.add_argument("--with-mesh", action="store_true",
                        help="average with MediaPipe's face mesh mapped to the 68 points (models/face_mesh.tflite): "
                        "more accurate, about 3x the time per face (models/README.md)")
    parser.add_argument("--refine-eyes", action="store_true",
                        help="look at each eye again at twice the resolution (models/eyes.tflite): eyelids "
                        "that close, for blink and drowsiness detection; about 1.5x the time per face (models/README.md)")
    parser.add_argument("--video", help="a video file, a USB camera's index (0, 1, ...) or picamera2 "
                        "(the Raspberry Pi camera module; docs/monitor.md)")
    parser.add_argument("--max-frames", type=monitor.nonnegative_int, default=0,
                        help="stop video after this many frames (0: at its end)")
    parser.add_argument("--focal-px", type=focal_length, help="camera focal length in pixels, for the head "
                        "pose (default: the image's longer side; docs/face_measures.md)")
    parser.add_argument("--no-draw", dest="draw", action="store_false",
                        help="write only the JSON: no annotated image or video")
    config.add_option_flags(parser, tracking.TrackerOptions, "tracking (video)")
    config.add_option_flags(parser, face_measures.BlinkOptions, "blinks and yawns (video; docs/face_measures.md)")
    monitor.add_flags(parser)
    args = parser.parse_args(join_negative_box(sys.argv[1:] if argv is None else list(argv)))
    if not args.images and args.video is None:
        parser.error("give image files (or --video SOURCE)")
    tracker_options = config.options_from_args(args, tracking.TrackerOptions)
    blink_options = config.options_from_args(args, face_measures.BlinkOptions)
    monitor.check_flags(parser, tracker_options, blink_options)

    try:
        model = LandmarkModel(args.model, threads=args.threads, flip_average=args.flip_average,
                              refine=args.refine, mesh=load_mesh(args.threads) if args.with_mesh else None,
                              part_refiners=load_part_refiners(refined_parts(args), args.threads))
        detector = make_detector(args.detector)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    out_dir = Path(args.out)
    try:
        make_output_folder(out_dir, "--out")
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.video is not None:
        try:
            return run_video(args.video, model, detector, out_dir, args.max_frames, args.draw, tracker_options,
                             face_measures.MeasureOptions(focal_px=args.focal_px), blink_options,
                             monitor.options_from_args(args))
        except InputError as err:
            print(f"error: {err}", file=sys.stderr)
            return EXIT_BAD_INPUT

    files, errors = expand_inputs(args.images)
    for message in errors:
        print(f"error: {message}", file=sys.stderr)
    results, no_face = [], []
    for path, stem in zip(files, output_stems(files, out_dir)):
        png_path, json_path = Path(f"{stem}.png"), Path(f"{stem}.json")
        try:
            record, image = annotate_image(path, model, detector, args.box,
                                           face_measures.MeasureOptions(focal_px=args.focal_px))
            annotated = (face_measures.draw_measures(draw_landmarks(image, record["faces"]), record["faces"])
                         if args.draw else None)
            write_outputs(png_path, json_path, annotated, record)
        except InputError as err:
            errors.append(str(err))
            print(f"error: {err}", file=sys.stderr)
            if isinstance(err, ModelOutputError):
                break  # the next photo would fare no better
            continue
        results.append(record)
        if record["faces"]:
            print(f"{path}: {len(record['faces'])} face(s) -> {png_path if args.draw else json_path}",
                  file=sys.stderr)
        else:
            no_face.append(str(path))
            print(f"{path}: no face found (try --box x,y,w,h)", file=sys.stderr)
    if args.json:
        print(json.dumps(results if len(results) != 1 else results[0], indent=1))
    if errors:
        return EXIT_BAD_INPUT
    return EXIT_NO_FACE if no_face else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
