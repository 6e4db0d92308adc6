"""Landmark tracking in video, the way MediaPipe's face-landmark graph does it.

Each frame, every tracked face is cropped from the landmarks it had in the previous frame
(a training-convention box from the 68 points, the roll from the eye centres), so the
landmark model alone follows it. The face detector runs only to find new faces: on every
``detect_every``-th frame while fewer than ``max_faces`` are tracked, on every frame while
nothing is tracked, and on a frame where a track was lost. A track is lost when its face
score drops below ``min_score`` or when most of its points have left the picture; it is
dropped at once, so nothing is drawn on the background. Each track keeps a stable id and
its own One-Euro filter. The face score is the model's (``FacePrediction.score``), or, for
a model without one, a proxy from how well the points fit their crop (see face_score).

Imports NumPy and OpenCV only (Raspberry Pi path).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import cv2
import numpy as np

import geometry
from config import ABOVE_0, AT_LEAST_0, AT_LEAST_1, FROM_0_TO_1

# For a model exported without the confidence output (no face score): the least agreement
# (IoU) between a crop's box and the box of the points found in it that keeps a track.
PROXY_MIN_SCORE = 0.75


# ---------------------------------------------------------------------------------------
# Smoothing
# ---------------------------------------------------------------------------------------

class OneEuroFilter:
    """One-Euro filter (Casiez et al., CHI 2012): smooths jitter when the points hold still
    and follows quickly when they move. Works on arrays of any shape.

    ``min_cutoff`` (Hz) sets the smoothing at rest, ``beta`` how fast the cutoff rises with
    speed. As in MediaPipe's landmark smoothing, the speed is measured in object sizes per
    second (``value_scale`` = 1 / object size), so one setting fits near and far faces.
    """

    def __init__(self, min_cutoff: float, beta: float, d_cutoff: float):
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.value = self.derivative = self.time = None

    @staticmethod
    def _alpha(cutoff, dt):
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, value: np.ndarray, timestamp: float, value_scale: float = 1.0) -> np.ndarray:
        value = np.asarray(value, dtype=np.float64)
        if self.value is None or value.shape != self.value.shape:
            self.value, self.derivative, self.time = value, np.zeros_like(value), timestamp
            return value
        dt = max(timestamp - self.time, 1e-6)
        derivative = (value - self.value) / dt
        a_d = self._alpha(self.d_cutoff, dt)
        self.derivative = a_d * derivative + (1 - a_d) * self.derivative
        cutoff = self.min_cutoff + self.beta * np.abs(self.derivative) * value_scale
        a = self._alpha(cutoff, dt)
        self.value = a * value + (1 - a) * self.value
        self.time = timestamp
        return self.value


# ---------------------------------------------------------------------------------------
# Boxes
# ---------------------------------------------------------------------------------------

box_iou = geometry.box_iou


def inside_fraction(landmarks_px: np.ndarray, width: int, height: int) -> float:
    """Fraction of the points inside a width x height picture. ``landmarks_px``: [N, 2]."""
    points = np.asarray(landmarks_px)
    inside = ((points[:, 0] >= -0.5) & (points[:, 0] <= width - 0.5)
              & (points[:, 1] >= -0.5) & (points[:, 1] <= height - 0.5))
    return float(inside.mean())


# ---------------------------------------------------------------------------------------
# The face score
# ---------------------------------------------------------------------------------------

def face_score(prediction, box_xywh, roll_deg: float) -> float:
    """The face score of a predict.FacePrediction: the model's, when it has one.

    A model exported without the confidence output has none: then a weaker PROXY, how well
    the box of the predicted points agrees with the box the face was cropped with (IoU). A
    face puts its points where the crop expects them, while on background they shrink
    towards the mean face (0.9-1.0 on a tracked face in benchmarks/video.py's clip, 0.5-0.7 on
    background; PROXY_MIN_SCORE keeps a track). It cannot tell a face that is covered up
    (the points drift onto what covers it) from one in plain view.
    """
    if prediction.score is not None:
        return float(prediction.score)
    return box_iou(geometry.box_from_landmarks_upright(prediction.landmarks_px, roll_deg), box_xywh)


# ---------------------------------------------------------------------------------------
# The tracker
# ---------------------------------------------------------------------------------------

@dataclass
class TrackerOptions:
    """How the tracker behaves; the defaults are what predict.py --video uses.
    config.option_problems checks the values against each field's ``check``."""
    detect_every: int = field(default=10, metadata={
        "help": "run the detector every N frames to find new faces (0: only when nothing is tracked)",
        "check": AT_LEAST_0})
    max_faces: int = field(default=4, metadata={
        "help": "faces tracked at once; with that many tracked the detector rests", "check": AT_LEAST_1})
    min_score: float = field(default=0.5, metadata={
        "help": "a track whose face score falls below this is dropped (and the detector runs)",
        "check": FROM_0_TO_1})
    match_iou: float = field(default=0.3, metadata={
        "help": "a detection overlapping a track by more than this IoU is that face, not a new one",
        "check": FROM_0_TO_1})
    min_inside: float = field(default=0.6, metadata={
        "help": "a track with fewer of its points inside the picture is dropped", "check": FROM_0_TO_1})
    smoothing: bool = field(default=True, metadata={"help": "One-Euro filter per track"})
    # Tuned on benchmarks/video.py's synthetic clip (see its --tune and the README).
    min_cutoff: float = field(default=0.1, metadata={"help": "One-Euro cutoff at rest, Hz", "check": ABOVE_0})
    beta: float = field(default=100.0, metadata={"help": "One-Euro speed coefficient, per face size",
                                                  "check": AT_LEAST_0})
    d_cutoff: float = field(default=1.0, metadata={"help": "One-Euro cutoff of the speed, Hz", "check": ABOVE_0})


@dataclass
class TrackedFace:
    """One face in one frame: a predict.FacePrediction (same fields, so predict.faces_json
    takes it) with its track's id, the points smoothed and the model's own."""
    track_id: int
    box_xywh: tuple             # the box this frame's crop was framed with (photo px)
    landmarks_px: np.ndarray    # [68, 2] photo px, smoothed when smoothing is on
    raw_landmarks_px: np.ndarray  # [68, 2] the model's points before smoothing
    score: float                # face score (or the proxy, see face_score)
    roll_deg: float
    frames_tracked: int         # 1 on the frame a track (and its filter) starts
    landmark_confidence: np.ndarray | None = None  # [68] when the model gives it


class _Track:
    def __init__(self, track_id: int, options: TrackerOptions):
        self.track_id = track_id
        self.smoother = OneEuroFilter(options.min_cutoff, options.beta, options.d_cutoff)
        self.face: TrackedFace | None = None
        self.frames_tracked = 0
        self.next_box_xywh: tuple = (0.0, 0.0, 1.0, 1.0)
        self.next_roll_deg = 0.0

    def accept(self, prediction, box_xywh, roll_deg, score, timestamp_s, smoothing: bool) -> None:
        raw = np.asarray(prediction.landmarks_px, dtype=np.float64)
        # The next frame's crop, from the raw points: smoothing would only add lag there.
        self.next_roll_deg = geometry.roll_from_landmarks(raw)
        self.next_box_xywh = geometry.box_from_landmarks_upright(raw, self.next_roll_deg)
        shown = self.smoother(raw, timestamp_s, 1.0 / self.next_box_xywh[2]) if smoothing else raw
        self.frames_tracked += 1
        self.face = TrackedFace(self.track_id, tuple(float(v) for v in box_xywh), shown, raw, score,
                                roll_deg, self.frames_tracked, prediction.landmark_confidence)


class FaceTracker:
    """Follows faces through the frames of a video.

    ``model``: a predict.LandmarkModel; ``detector``: a face_detector detector (its
    ``detect(image_bgr)`` gives face_detector.Detection objects, best first). Call
    ``update`` once per frame, in order. ``timings`` adds up the seconds spent detecting and
    in the landmark model; ``detector_calls`` counts the detector's runs.
    """

    def __init__(self, model, detector, options: TrackerOptions | None = None):
        self.model, self.detector = model, detector
        self.options = options or TrackerOptions()
        self.tracks: list[_Track] = []
        self.frame_index = -1
        self.next_id = 0
        self.detector_calls = 0
        self.timings = {"detect": 0.0, "landmarks": 0.0}

    def update(self, frame_bgr: np.ndarray, timestamp_s: float) -> list[TrackedFace]:
        """The faces of this frame, oldest track first."""
        options = self.options
        self.frame_index += 1

        started = time.perf_counter()
        image_grey = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY) if frame_bgr.ndim == 3 else frame_bgr
        kept, lost = [], []
        for track in self.tracks:
            if self._follow(track, image_grey, track.next_box_xywh, track.next_roll_deg, timestamp_s):
                kept.append(track)
            else:
                lost.append(track)
        self.tracks = self._without_duplicates(kept)
        self.timings["landmarks"] += time.perf_counter() - started

        periodic = (options.detect_every > 0 and self.frame_index % options.detect_every == 0
                    and len(self.tracks) < options.max_faces)
        if not self.tracks or lost or periodic:
            self._find_new_faces(frame_bgr, image_grey, timestamp_s, lost)
        self.tracks.sort(key=lambda track: track.track_id)
        return [track.face for track in self.tracks]

    def _follow(self, track: _Track, image_grey, box_xywh, roll_deg, timestamp_s) -> bool:
        """Predict the track's face in this frame from a box; False if the face is gone."""
        prediction = self.model.predict_face(image_grey, box_xywh, roll_deg)
        score = face_score(prediction, box_xywh, roll_deg)
        min_score = self.options.min_score if prediction.score is not None else PROXY_MIN_SCORE
        height, width = image_grey.shape[:2]
        if (score < min_score
                or inside_fraction(prediction.landmarks_px, width, height) < self.options.min_inside):
            return False
        track.accept(prediction, box_xywh, roll_deg, score, timestamp_s, self.options.smoothing)
        return True

    def _find_new_faces(self, frame_bgr, image_grey, timestamp_s, lost: list[_Track]) -> None:
        """Run the detector; start a track on each face not tracked yet. A face found where
        a track was lost in this frame (a sudden move) keeps that track's id."""
        started = time.perf_counter()
        detections = self.detector.detect(frame_bgr)
        self.detector_calls += 1
        self.timings["detect"] += time.perf_counter() - started

        started = time.perf_counter()
        for detection in detections:
            if len(self.tracks) >= self.options.max_faces:
                break
            box = tuple(float(v) for v in detection.training_box_xywh)
            if any(box_iou(box, track.next_box_xywh) > self.options.match_iou for track in self.tracks):
                continue  # a face already tracked
            # The detector's box only finds the face; the crop it is tracked with comes from
            # its landmarks, as in every later frame (and the score means the same thing).
            first = self.model.predict_face(image_grey, box, float(detection.roll_deg))
            roll = geometry.roll_from_landmarks(first.landmarks_px)
            same = [old for old in lost if box_iou(box, old.next_box_xywh) > self.options.match_iou]
            track = _Track(same[0].track_id if same else self.next_id, self.options)
            if not self._follow(track, image_grey, geometry.box_from_landmarks_upright(first.landmarks_px, roll),
                                roll, timestamp_s):
                continue
            if any(box_iou(track.next_box_xywh, other.next_box_xywh) > self.options.match_iou
                   for other in self.tracks):
                continue  # a loose detection box beside a tracked face, whose points land on it
            self.tracks.append(track)
            if same:
                lost.remove(same[0])
            else:
                self.next_id += 1
        self.timings["landmarks"] += time.perf_counter() - started

    def _without_duplicates(self, tracks: list[_Track]) -> list[_Track]:
        """Two tracks that converged on one face: the older one stays."""
        kept: list[_Track] = []
        for track in tracks:  # oldest first
            if all(box_iou(track.next_box_xywh, other.next_box_xywh) <= self.options.match_iou
                   for other in kept):
                kept.append(track)
        return kept
