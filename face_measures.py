"""What people measure on 68 landmarks: head pose, eye and mouth openness, blinks and yawns.

    measures = measure_face(landmarks_px, (width, height))
    # {"pose": {"yaw": 12.1, "pitch": -3.4, "roll": 1.9, "reason": None},
    #  "eyes": {"left_ear": 0.31, "right_ear": 0.29, "reason": None},
    #  "mouth": {"mar": 0.04, "reason": None}}

Head pose comes from ``cv2.solvePnP`` between the 2D points and a 3D mean face
(``MEAN_FACE_3D_CM``, see below), with a pinhole camera guessed from the image size
(``camera_matrix``). Openness is the eye aspect ratio of Soukupova and Cech (2016) and a
mouth aspect ratio on the inner lips. ``BlinkMonitor`` turns one face's per-frame values
into blinks, blink rate, PERCLOS, a drowsiness flag and yawns. docs/face_measures.md gives
the definitions, the conventions and the sources of every default.

Angles, in degrees, of the head as the camera sees it: 0, 0, 0 is a level face looking
straight into the camera, wherever it is in the picture (the angles are measured from the
line of sight from the camera to the face, not from the optical axis, so a face near the
edge of a photo does not look turned, and a wrong focal-length guess matters less):

- ``yaw``   > 0: the face turns towards the image's right (its nose points right);
- ``pitch`` > 0: the face tilts up (its nose points towards the image's top);
- ``roll``  > 0: the face leans clockwise on screen, the eye on the image's right lower,
  the sign of ``geometry.roll_from_eyes``.

The head's rotation from the line of sight is ``Rz(roll) @ Ry(-yaw) @ Rx(-pitch)``
(``rotation_from_angles``; ``line_of_sight_rotation`` @ it is the rotation in the camera's
frame): roll comes last, so turning a photo in its plane about its centre by ``a`` degrees
changes the roll by ``a`` and nothing else.

NumPy and OpenCV only: this module runs on the Raspberry Pi path.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import cv2
import numpy as np

import geometry
from config import ABOVE_0, ABOVE_0_TO_1, AT_LEAST_0, AT_LEAST_1, LEFT_EYE_OUTER, RIGHT_EYE_OUTER

# 68-point (iBUG) index groups, 0-based. The eyes are geometry.RIGHT_EYE_68 (36-41, the
# person's right: the image's left in a frontal photo) and geometry.LEFT_EYE_68 (42-47);
# their six points are p1..p6 of Soukupova and Cech (2016): p1, p4 the corners, p2, p3 the
# upper lid, p5, p6 the lower lid (p2 above p6, p3 above p5).
# Inner lips: corners 60 and 64; upper lip 61, 62, 63 above lower lip 67, 66, 65.
INNER_MOUTH_CORNERS_68 = (60, 64)
INNER_LIP_PAIRS_68 = ((61, 67), (62, 66), (63, 65))
OUTER_EYE_CORNERS_68 = (LEFT_EYE_OUTER, RIGHT_EYE_OUTER)  # 36, 45: on the image's left, right
NOSE_TIP_68 = 30

# The points solvePnP fits: the nose (27-35), the eye corners and the mouth corners, the
# points that move least with the face's expression. Left out: the jaw line (on a turned
# face it is the silhouette, which slides over the head instead of staying on fixed 3D
# points), the eyelids (blinks), the lips and chin (speech, yawns) and the brows (raised
# and frowned). docs/face_measures.md has the figures.
POSE_POINTS_68 = tuple(range(27, 36)) + (36, 39, 42, 45) + (48, 54)

# 3D mean face, centimetres, object frame = camera frame of a frontal, upright face: x
# towards the image's right (the person's left), y down, z away from the camera; origin
# between the four eye corners. Derived from MediaPipe's canonical face model
# (mediapipe/modules/face_geometry/data/canonical_face_model.obj, Apache License 2.0,
# Copyright Google LLC; "a static 3D model of a human face" in centimetres): each 68-point
# landmark is the mesh vertex, or the mean of the two vertices, listed in
# MEDIAPIPE_VERTICES_68; y and z negated (MediaPipe: y up, z towards the camera); made exactly
# left-right symmetric (mean with its mirror image, at most 0.95 cm apart before: the jaw
# point 3); origin moved. Checked against the 300-W annotations in docs/face_measures.md.
MEDIAPIPE_VERTICES_68 = (
    (127,), (234,), (93,), (132, 58), (58, 172), (136,), (150,), (176,), (152,), (400,),
    (379,), (365,), (397, 288), (361,), (323,), (454,), (356,),  # jaw 0-16
    (70,), (63,), (105,), (66,), (107,), (336,), (296,), (334,), (293,), (300,),  # brows
    (168, 6), (197, 195), (5,), (4,), (75,), (97,), (2,), (326,), (305,),  # nose 27-35
    (33,), (160,), (158,), (133,), (153,), (144,),  # right eye 36-41
    (362,), (385,), (387,), (263,), (373,), (380,),  # left eye 42-47
    (61,), (39,), (37,), (0,), (267,), (269,), (291,), (321,), (314,), (17,), (84,), (91,),  # lips 48-59
    (78,), (82,), (13,), (312,), (308,), (317,), (14,), (87,),  # inner lips 60-67
)
MEAN_FACE_3D_CM = np.array([
    [ -7.743,   0.260,   5.471],  # 0
    [ -7.664,   1.951,   5.902],  # 1
    [ -7.542,   3.674,   5.897],  # 2
    [ -7.133,   5.990,   5.591],  # 3
    [ -6.330,   8.131,   4.654],  # 4
    [ -5.085,   9.803,   2.751],  # 5
    [ -4.069,  10.618,   1.541],  # 6
    [ -2.309,  11.599,  -0.143],  # 7
    [  0.000,  12.028,  -0.799],  # 8
    [  2.309,  11.599,  -0.143],  # 9
    [  4.069,  10.618,   1.541],  # 10
    [  5.085,   9.803,   2.751],  # 11
    [  6.330,   8.131,   4.654],  # 12
    [  7.133,   5.990,   5.591],  # 13
    [  7.542,   3.674,   5.897],  # 14
    [  7.664,   1.951,   5.902],  # 15
    [  7.743,   0.260,   5.471],  # 16
    [ -5.721,  -1.630,   0.635],  # 17
    [ -4.986,  -2.178,  -0.286],  # 18
    [ -3.987,  -2.485,  -1.001],  # 19
    [ -2.760,  -2.476,  -1.550],  # 20
    [ -1.396,  -2.387,  -1.850],  # 21
    [  1.396,  -2.387,  -1.850],  # 22
    [  2.760,  -2.476,  -1.550],  # 23
    [  3.987,  -2.485,  -1.001],  # 24
    [  4.986,  -2.178,  -0.286],  # 25
    [  5.721,  -1.630,   0.635],  # 26
    [  0.000,  -0.248,  -2.047],  # 27
    [  0.000,   1.231,  -3.080],  # 28
    [  0.000,   2.259,  -3.777],  # 29
    [  0.000,   3.088,  -4.121],  # 30
    [ -1.044,   4.090,  -2.197],  # 31
    [ -0.597,   4.638,  -2.401],  # 32
    [  0.000,   4.714,  -2.593],  # 33
    [  0.597,   4.638,  -2.401],  # 34
    [  1.044,   4.090,  -2.197],  # 35
    [ -4.446,  -0.039,   0.292],  # 36
    [ -3.670,  -0.303,  -0.259],  # 37
    [ -2.724,  -0.337,  -0.406],  # 38
    [ -1.856,   0.039,  -0.292],  # 39
    [ -2.724,   0.309,  -0.311],  # 40
    [ -3.670,   0.264,  -0.170],  # 41
    [  1.856,   0.039,  -0.292],  # 42
    [  2.724,  -0.337,  -0.406],  # 43
    [  3.670,  -0.303,  -0.259],  # 44
    [  4.446,  -0.039,   0.292],  # 45
    [  3.670,   0.264,  -0.170],  # 46
    [  2.724,   0.309,  -0.311],  # 47
    [ -2.456,   6.967,  -0.818],  # 48
    [ -1.432,   6.126,  -2.031],  # 49
    [ -0.711,   5.954,  -2.411],  # 50
    [  0.000,   6.031,  -2.514],  # 51
    [  0.711,   5.954,  -2.411],  # 52
    [  1.432,   6.126,  -2.031],  # 53
    [  2.456,   6.967,  -0.818],  # 54
    [  1.839,   7.453,  -1.358],  # 55
    [  0.700,   7.916,  -1.983],  # 56
    [  0.000,   7.990,  -2.070],  # 57
    [ -0.700,   7.916,  -1.983],  # 58
    [ -1.839,   7.453,  -1.358],  # 59
    [ -2.153,   6.901,  -0.572],  # 60
    [ -0.533,   6.618,  -1.673],  # 61
    [  0.000,   6.619,  -1.754],  # 62
    [  0.533,   6.618,  -1.673],  # 63
    [  2.153,   6.901,  -0.572],  # 64
    [  0.583,   7.143,  -1.874],  # 65
    [  0.000,   7.167,  -1.939],  # 66
    [ -0.583,   7.143,  -1.874],  # 67
], dtype=np.float64)


@dataclass
class MeasureOptions:
    """When a face's measures are given as null, and the camera guessed for the pose."""

    # Below this distance between the outer eye corners (pixels) the points are too coarse:
    # 20 px puts an eye about 6 px wide, where one pixel moves the EAR by ~0.15.
    min_interocular_px: float = field(default=20.0, metadata={"help": "smaller faces get null measures"})
    # 300-W, which the model learnt from, holds faces up to about +-45 degrees of yaw;
    # beyond these the points (and so every measure) are guesses.
    max_yaw_deg: float = field(default=50.0, metadata={"help": "more turned faces get null measures"})
    max_pitch_deg: float = field(default=40.0, metadata={"help": "more tilted faces get null measures"})
    # Mean distance between the fitted points and the mean face's projection, as a fraction
    # of the inter-ocular distance: beyond this the points are not a face in any pose.
    max_fit_error: float = field(default=0.15, metadata={"help": "worse fits get null measures"})
    focal_px: float | None = field(default=None, metadata={"help": "camera focal length in "
                                   "pixels (default: the image's longer side)"})


@dataclass
class HeadPose:
    """solvePnP's answer for one face: angles in degrees (from the line of sight), the
    rotation [3, 3] and the translation [3] (cm) taking mean-face points into the camera
    frame, and the mean reprojection error over POSE_POINTS_68 in pixels."""

    yaw: float
    pitch: float
    roll: float
    rotation: np.ndarray
    translation_cm: np.ndarray
    fit_error_px: float


# ---------------------------------------------------------------------------------------
# Head pose
# ---------------------------------------------------------------------------------------

def camera_matrix(image_size, focal_px: float | None = None) -> np.ndarray:
    """[3, 3] pinhole intrinsics for a (width, height) image: the focal length is the
    image's longer side unless given (a horizontal field of view of 53 degrees, between a
    laptop webcam's and a phone's), the principal point the image centre in pixel-centre
    coordinates ((w - 1) / 2, (h - 1) / 2), no skew, square pixels, no lens distortion."""
    width, height = (float(v) for v in image_size)
    focal = float(focal_px) if focal_px else max(width, height)
    return np.array([[focal, 0.0, (width - 1) / 2], [0.0, focal, (height - 1) / 2], [0.0, 0.0, 1.0]])


def rotation_from_angles(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """[3, 3] head rotation for angles in degrees: Rz(roll) @ Ry(-yaw) @ Rx(-pitch)."""
    y, p, r = (math.radians(v) for v in (-yaw, -pitch, roll))
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return rz @ ry @ rx


def angles_from_rotation(rotation: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of a [3, 3] rotation; inverse of rotation_from_angles
    for |yaw| < 90."""
    r = np.asarray(rotation, dtype=np.float64)
    yaw = math.degrees(math.asin(float(np.clip(r[2, 0], -1.0, 1.0))))  # r20 = -sin(-yaw)
    pitch = -math.degrees(math.atan2(r[2, 1], r[2, 2]))
    roll = math.degrees(math.atan2(r[1, 0], r[0, 0]))
    return yaw, pitch, roll


def head_pose(landmarks_px: np.ndarray, image_size, focal_px: float | None = None,
              mean_face_cm: np.ndarray = MEAN_FACE_3D_CM) -> HeadPose:
    """Fit the mean face to one face's points ([68, 2] pixels) seen by camera_matrix.

    SQPnP finds the global optimum of the reprojection error (no initial guess to go
    wrong); Levenberg-Marquardt then polishes it. No plausibility checks: see measure_face.
    """
    image_points = np.ascontiguousarray(np.asarray(landmarks_px, np.float64)[list(POSE_POINTS_68)])
    object_points = np.ascontiguousarray(mean_face_cm[list(POSE_POINTS_68)])
    camera = camera_matrix(image_size, focal_px)
    no_distortion = np.zeros(4)
    ok, rvec, tvec = cv2.solvePnP(object_points, image_points, camera, no_distortion,
                                  flags=cv2.SOLVEPNP_SQPNP)
    if not ok:
        raise ValueError("solvePnP found no pose")
    rvec, tvec = cv2.solvePnPRefineLM(object_points, image_points, camera, no_distortion, rvec, tvec)
    projected, _ = cv2.projectPoints(object_points, rvec, tvec, camera, no_distortion)
    fit_error = float(np.linalg.norm(projected[:, 0] - image_points, axis=1).mean())
    rotation = cv2.Rodrigues(rvec)[0]
    yaw, pitch, roll = angles_from_rotation(line_of_sight_rotation(tvec.ravel()).T @ rotation)
    return HeadPose(yaw, pitch, roll, rotation, tvec.ravel(), fit_error)


def line_of_sight_rotation(position_cm) -> np.ndarray:
    """[3, 3] the smallest rotation taking the optical axis (0, 0, 1) onto the line from the
    camera to ``position_cm`` [3]. A head that faces the camera, anywhere in the picture,
    has this rotation; the angles are measured from it."""
    direction = np.asarray(position_cm, dtype=np.float64)
    direction = direction / np.linalg.norm(direction)
    axis = np.cross([0.0, 0.0, 1.0], direction)
    sine, cosine = np.linalg.norm(axis), direction[2]
    if sine < 1e-12:
        return np.eye(3) if cosine > 0 else np.diag([1.0, -1.0, -1.0])
    return cv2.Rodrigues(axis / sine * math.atan2(sine, cosine))[0]


def project_mean_face(yaw: float, pitch: float, roll: float, translation_cm, image_size,
                      focal_px: float | None = None) -> np.ndarray:
    """The mean face at a known pose (angles as head_pose measures them, from the line of
    sight; origin at ``translation_cm``) as a camera sees it: [68, 2] pixels."""
    rotation = line_of_sight_rotation(translation_cm) @ rotation_from_angles(yaw, pitch, roll)
    rvec = cv2.Rodrigues(rotation)[0]
    projected, _ = cv2.projectPoints(MEAN_FACE_3D_CM, rvec, np.asarray(translation_cm, np.float64),
                                     camera_matrix(image_size, focal_px), np.zeros(4))
    return projected[:, 0]


# ---------------------------------------------------------------------------------------
# Openness
# ---------------------------------------------------------------------------------------

def eye_aspect_ratio(eye_px: np.ndarray) -> np.ndarray:
    """EAR of eyes given as [..., 6, 2] points p1..p6 (Soukupova and Cech 2016):
    (|p2 - p6| + |p3 - p5|) / (2 |p1 - p4|). About 0.3 open, towards 0 closed. Returns [...]."""
    eye = np.asarray(eye_px, dtype=np.float64)
    vertical = (np.linalg.norm(eye[..., 1, :] - eye[..., 5, :], axis=-1)
                + np.linalg.norm(eye[..., 2, :] - eye[..., 4, :], axis=-1))
    return vertical / (2.0 * np.linalg.norm(eye[..., 0, :] - eye[..., 3, :], axis=-1))


def eye_aspect_ratios(landmarks_px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(left EAR, right EAR) of [..., 68, 2] landmarks, each [...]; left is the person's
    left eye (points 42-47)."""
    points = np.asarray(landmarks_px, dtype=np.float64)
    return (eye_aspect_ratio(points[..., geometry.LEFT_EYE_68, :]),
            eye_aspect_ratio(points[..., geometry.RIGHT_EYE_68, :]))


def mouth_aspect_ratio(landmarks_px: np.ndarray) -> np.ndarray:
    """MAR of [..., 68, 2] landmarks on the inner lips: the mean of the three openings
    |p61 - p67|, |p62 - p66|, |p63 - p65| over the inner mouth width |p60 - p64|.
    0 with the lips together; about 0.5 and more for a yawn. Returns [...]."""
    points = np.asarray(landmarks_px, dtype=np.float64)
    opening = sum(np.linalg.norm(points[..., upper, :] - points[..., lower, :], axis=-1)
                  for upper, lower in INNER_LIP_PAIRS_68) / len(INNER_LIP_PAIRS_68)
    first, second = INNER_MOUTH_CORNERS_68
    return opening / np.linalg.norm(points[..., first, :] - points[..., second, :], axis=-1)


# ---------------------------------------------------------------------------------------
# One face's measures, as they go into the JSON
# ---------------------------------------------------------------------------------------

def null_measures(reason: str) -> dict:
    return {"pose": {"yaw": None, "pitch": None, "roll": None, "reason": reason},
            "eyes": {"left_ear": None, "right_ear": None, "reason": reason},
            "mouth": {"mar": None, "reason": reason}}


def measure_face(landmarks_px: np.ndarray, image_size, options: MeasureOptions | None = None) -> dict:
    """Pose, eye and mouth openness of one face ([68, 2] pixels in a (width, height) image),
    as the JSON's ``pose``, ``eyes`` and ``mouth``. Values are rounded (0.1 degree, 0.001).

    A face too small, too turned, or whose points fit no face gets nulls everywhere and a
    ``reason`` saying which; otherwise ``reason`` is None. Never raises for finite points of
    the right shape; raises ValueError for points of the wrong shape.
    """
    options = options or MeasureOptions()
    points = np.asarray(landmarks_px, dtype=np.float64)
    if points.shape != (geometry.NUM_LANDMARKS, 2):
        raise ValueError(f"landmarks of shape {points.shape}, expected ({geometry.NUM_LANDMARKS}, 2)")
    if not np.all(np.isfinite(points)):
        return null_measures("landmarks are not finite numbers")
    interocular = float(np.linalg.norm(points[OUTER_EYE_CORNERS_68[1]] - points[OUTER_EYE_CORNERS_68[0]]))
    if interocular < options.min_interocular_px:
        return null_measures(f"face too small: {interocular:.1f} px between the outer eye corners "
                             f"(at least {options.min_interocular_px:g} needed)")
    try:
        pose = head_pose(points, image_size, options.focal_px)
    except (ValueError, cv2.error) as err:
        return null_measures(f"no head pose fits these points ({err})")
    fit_error = pose.fit_error_px / interocular
    if fit_error > options.max_fit_error or pose.translation_cm[2] <= 0:
        return null_measures(f"the points fit no face: mean fit error {fit_error:.2f} of the "
                             f"inter-ocular distance (at most {options.max_fit_error:g})")
    if abs(pose.yaw) > options.max_yaw_deg:
        return null_measures(f"face too turned: yaw {pose.yaw:.0f} degrees "
                             f"(at most +-{options.max_yaw_deg:g} is reliable)")
    if abs(pose.pitch) > options.max_pitch_deg:
        return null_measures(f"face too tilted: pitch {pose.pitch:.0f} degrees "
                             f"(at most +-{options.max_pitch_deg:g} is reliable)")
    left_ear, right_ear = eye_aspect_ratios(points)
    return {"pose": {"yaw": round(pose.yaw, 1), "pitch": round(pose.pitch, 1),
                     "roll": round(pose.roll, 1), "reason": None},
            "eyes": openness({"left_ear": left_ear, "right_ear": right_ear},
                             "an eye's corners coincide (the eye has no width)"),
            "mouth": openness({"mar": mouth_aspect_ratio(points)},
                              "the mouth's inner corners coincide (the mouth has no width)")}


def openness(ratios: dict, fault: str) -> dict:
    """Ratios rounded to 0.001 with ``reason`` None; all None with ``fault`` as the reason
    when one is not finite (a ratio over a zero width): JSON has no NaN or infinity."""
    values = [float(v) for v in ratios.values()]
    if not all(math.isfinite(v) for v in values):
        return {**{name: None for name in ratios}, "reason": fault}
    return {**{name: round(v, 3) for name, v in zip(ratios, values)}, "reason": None}


# ---------------------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------------------

# x (the person's left) magenta, up yellow, forward blue: apart from the points' and lines' colours.
AXIS_COLORS_BGR = ((255, 0, 255), (0, 220, 255), (255, 60, 0))


def pose_axes_px(landmarks_px: np.ndarray, pose: dict, length_factor: float = 0.8) -> np.ndarray:
    """The head's axes drawn from the nose tip: [4, 2] pixels (origin, then the ends of
    x = the person's left, up, forward = where the nose points), each axis
    ``length_factor`` x the inter-ocular distance long, projected orthographically.
    static/app.js draws the same."""
    points = np.asarray(landmarks_px, dtype=np.float64)
    length = length_factor * np.linalg.norm(points[OUTER_EYE_CORNERS_68[1]] - points[OUTER_EYE_CORNERS_68[0]])
    rotation = rotation_from_angles(pose["yaw"], pose["pitch"], pose["roll"])
    directions = rotation @ np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]]).T
    origin = points[NOSE_TIP_68]
    return np.vstack([origin, origin + length * directions[:2].T])


def measures_text(face: dict) -> list[str]:
    """One face's measures as short lines for a picture or a console."""
    pose, eyes, mouth = face.get("pose") or {}, face.get("eyes") or {}, face.get("mouth") or {}
    if pose.get("yaw") is None:
        return [pose.get("reason") or "no measures"]
    def text(value):
        return "-" if value is None else f"{value:.2f}"

    return [f"yaw {pose['yaw']:+.0f} pitch {pose['pitch']:+.0f} roll {pose['roll']:+.0f}",
            f"EAR L {text(eyes['left_ear'])} R {text(eyes['right_ear'])}  MAR {text(mouth['mar'])}"]


def draw_measures(image_bgr: np.ndarray, faces: list[dict], extra_lines=None) -> np.ndarray:
    """``image_bgr`` with each face's pose axes and measures written under its box (faces as
    in the JSON: ``box``, ``landmarks``, ``pose``, ``eyes``, ``mouth``). ``extra_lines``:
    per face, more lines to write (a BlinkMonitor's summary in video). Draws in place and
    returns the image."""
    thickness = max(1, round(max(image_bgr.shape[:2]) / 400))
    scale = 0.4 * thickness
    for index, face in enumerate(faces):
        pose = face.get("pose") or {}
        if pose.get("yaw") is not None:
            axes = np.round(pose_axes_px(face["landmarks"], pose)).astype(np.int32)
            for end, color in zip(axes[1:], AXIS_COLORS_BGR):
                cv2.arrowedLine(image_bgr, tuple(axes[0]), tuple(end), color, thickness + 2,
                                cv2.LINE_AA, tipLength=0.15)
        x, y, w, h = face["box"]
        lines = measures_text(face) + list((extra_lines or {}).get(index, []))
        for row, text in enumerate(lines):
            origin = (round(x), round(y + h) + round((row + 1) * 16 * scale * 1.6))
            cv2.putText(image_bgr, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0),
                        thickness + 2, cv2.LINE_AA)
            cv2.putText(image_bgr, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                        thickness, cv2.LINE_AA)
    return image_bgr


# ---------------------------------------------------------------------------------------
# Video: blinks, PERCLOS, drowsiness and yawns of one tracked face
# ---------------------------------------------------------------------------------------

@dataclass
class BlinkOptions:
    """Thresholds of BlinkMonitor; docs/face_measures.md gives the source of each default."""

    ear_close: float = field(default=0.21, metadata={"help": "EAR below this: the eyes close", "check": ABOVE_0})
    ear_open: float = field(default=0.25, metadata={"help": "EAR above this: open again (hysteresis)", "check": ABOVE_0})
    min_closed_frames: int = field(default=2, metadata={"help": "frames below ear_close for a blink", "check": AT_LEAST_1})
    max_blink_s: float = field(default=0.5, metadata={"help": "longer closures are long closures, not blinks", "check": ABOVE_0})
    window_s: float = field(default=60.0, metadata={"help": "sliding window of PERCLOS and blink rate", "check": ABOVE_0})
    min_window_s: float = field(default=10.0, metadata={"help": "PERCLOS and rate need this much video", "check": AT_LEAST_0})
    perclos_drowsy: float = field(default=0.15, metadata={"help": "PERCLOS at or above this: drowsy", "check": ABOVE_0_TO_1})
    mar_yawn: float = field(default=0.6, metadata={"help": "MAR above this: a yawn starts", "check": ABOVE_0})
    mar_yawn_end: float = field(default=0.45, metadata={"help": "MAR below this: the yawn ends", "check": ABOVE_0})
    min_yawn_s: float = field(default=1.5, metadata={"help": "shorter mouth openings are not yawns", "check": AT_LEAST_0})
    max_gap_s: float = field(default=0.5, metadata={"help": "a longer gap without values drops an event under way", "check": ABOVE_0})


@dataclass
class EyeEvent:
    """A blink, a long eye closure or a yawn: times in the caller's seconds."""

    kind: str  # "blink", "long_closure" or "yawn"
    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    def to_json(self) -> dict:
        return {"type": self.kind, "start_s": round(self.start_s, 3), "end_s": round(self.end_s, 3),
                "duration_s": round(self.duration_s, 3)}


class BlinkMonitor:
    """Blinks, blink rate, PERCLOS, drowsiness and yawns of one face, fed frame by frame.

    ``update(timestamp_s, left_ear, right_ear, mar)`` once per frame, timestamps increasing;
    a value is None when the frame has no measure (face lost, too turned). Both eyes are
    averaged (one alone when the other is None), as Soukupova and Cech do.

    - A closure starts when the EAR falls below ``ear_close`` and ends when it rises above
      ``ear_open``; values in between keep the current state (hysteresis), so noise around
      one threshold cannot split a blink in two. A closure with at least
      ``min_closed_frames`` frames below ``ear_close`` is a blink if it lasted at most
      ``max_blink_s`` (start: the first frame below ``ear_close``; end: the first frame
      above ``ear_open``), a long closure otherwise.
    - PERCLOS: the fraction of the last ``window_s`` seconds with the EAR below
      ``ear_close`` (each frame counts for the time since the one before it, gaps capped at
      ``max_gap_s``); None until ``min_window_s`` seconds have values.
    - Blink rate: blinks that ended in the window, per minute of window with values.
    - Drowsy: PERCLOS at least ``perclos_drowsy``, or a long closure in the window, or the
      eyes closed right now for longer than ``max_blink_s``.
    - Yawn: MAR above ``mar_yawn`` until it falls below ``mar_yawn_end``, lasting at least
      ``min_yawn_s``.
    """

    def __init__(self, options: BlinkOptions | None = None):
        self.options = options or BlinkOptions()
        # The blinks, long closures and yawns that ended in the last window_s seconds, in
        # order; totals since the start in ``totals``. Memory and time per frame stay the
        # same however long the face is watched.
        self.events: deque[EyeEvent] = deque()
        self.totals = {"blink": 0, "long_closure": 0, "yawn": 0}
        self._new_events: list[EyeEvent] = []
        self._samples: deque = deque()  # (timestamp, seconds it covers, eyes closed?)
        self._covered_s = self._closed_s = 0.0  # running sums over _samples
        self._last_time: float | None = None
        self._last_ear_time: float | None = None
        self._last_mar_time: float | None = None
        self._closure_start: float | None = None
        self._closed_frames = 0
        self._yawn_start: float | None = None

    # -- per frame ---------------------------------------------------------------------
    def update(self, timestamp_s: float, left_ear: float | None, right_ear: float | None,
               mar: float | None) -> dict:
        """Take one frame's values; return the state (see ``state``) with ``new_events``:
        the events that ended on this frame."""
        if self._last_time is not None and timestamp_s <= self._last_time:
            raise ValueError(f"timestamps must increase: {timestamp_s} after {self._last_time}")
        self._new_events = []
        ears = [float(v) for v in (left_ear, right_ear) if v is not None]
        ear = sum(ears) / len(ears) if ears else None
        if ear is not None:
            self._update_eyes(timestamp_s, ear)
        if mar is not None:
            self._update_mouth(timestamp_s, float(mar))
        self._last_time = timestamp_s
        self._drop_old(timestamp_s)
        return {**self.state(), "new_events": [event.to_json() for event in self._new_events]}

    def _add_event(self, event: EyeEvent) -> None:
        self.events.append(event)
        self._new_events.append(event)
        self.totals[event.kind] += 1

    def _update_eyes(self, now: float, ear: float) -> None:
        opts = self.options
        gap = None if self._last_ear_time is None else now - self._last_ear_time
        if gap is not None and gap > opts.max_gap_s:
            self._closure_start, self._closed_frames = None, 0  # a closure across a gap is unknown
            gap = None
        self._last_ear_time = now
        covers = min(gap, opts.max_gap_s) if gap is not None else 0.0
        self._samples.append((now, covers, ear < opts.ear_close))
        self._covered_s += covers
        self._closed_s += covers if ear < opts.ear_close else 0.0
        if self._closure_start is None:
            if ear < opts.ear_close:
                self._closure_start, self._closed_frames = now, 1
            return
        if ear > opts.ear_open:
            if self._closed_frames >= opts.min_closed_frames:
                kind = "blink" if now - self._closure_start <= opts.max_blink_s else "long_closure"
                self._add_event(EyeEvent(kind, self._closure_start, now))
            self._closure_start, self._closed_frames = None, 0
        elif ear < opts.ear_close:
            self._closed_frames += 1

    def _update_mouth(self, now: float, mar: float) -> None:
        opts = self.options
        if self._last_mar_time is not None and now - self._last_mar_time > opts.max_gap_s:
            self._yawn_start = None
        self._last_mar_time = now
        if self._yawn_start is None:
            if mar > opts.mar_yawn:
                self._yawn_start = now
        elif mar < opts.mar_yawn_end:
            if now - self._yawn_start >= opts.min_yawn_s:
                self._add_event(EyeEvent("yawn", self._yawn_start, now))
            self._yawn_start = None

    def _drop_old(self, now: float) -> None:
        start = now - self.options.window_s
        while self._samples and self._samples[0][0] <= start:
            _, covers, closed = self._samples.popleft()
            self._covered_s -= covers
            self._closed_s -= covers if closed else 0.0
        if not self._samples:  # no rounding error carried over from the samples gone
            self._covered_s = self._closed_s = 0.0
        while self.events and self.events[0].end_s <= start:
            self.events.popleft()

    # -- what it has seen ----------------------------------------------------------------
    def count(self, kind: str, since_s: float | None = None) -> int:
        """Events of this kind since the start, or (``since_s``, within the window) those
        that ended after ``since_s``."""
        if since_s is None:
            return self.totals[kind]
        return sum(1 for e in self.events if e.kind == kind and e.end_s > since_s)

    def covered_s(self) -> float:
        """Seconds of the window with EAR values."""
        return max(self._covered_s, 0.0)

    def perclos(self) -> float | None:
        covered = self.covered_s()
        if covered < self.options.min_window_s or covered <= 0:
            return None
        return min(max(self._closed_s, 0.0) / covered, 1.0)

    def blink_rate_per_min(self) -> float | None:
        covered = self.covered_s()
        if covered < self.options.min_window_s or self._last_time is None:
            return None
        return 60.0 * self.count("blink", self._last_time - self.options.window_s) / covered

    def eyes_closed_s(self) -> float:
        """How long the eyes have been closed, up to the last frame (0 when open)."""
        if self._closure_start is None or self._last_ear_time is None:
            return 0.0
        return self._last_ear_time - self._closure_start

    def drowsy(self) -> bool:
        opts = self.options
        perclos = self.perclos()
        recent_long = (self._last_time is not None
                       and self.count("long_closure", self._last_time - opts.window_s) > 0)
        return bool((perclos is not None and perclos >= opts.perclos_drowsy) or recent_long
                    or self.eyes_closed_s() > opts.max_blink_s)

    def state(self) -> dict:
        """The JSON of this face's monitor: totals since the start, window figures."""
        perclos, rate = self.perclos(), self.blink_rate_per_min()
        return {"eyes_closed": self._closure_start is not None,
                "blinks": self.count("blink"),
                "blink_rate_per_min": None if rate is None else round(rate, 1),
                "perclos": None if perclos is None else round(perclos, 3),
                "long_closures": self.count("long_closure"),
                "yawns": self.count("yawn"),
                "yawning": self._yawn_start is not None,
                "drowsy": self.drowsy()}

    def summary_lines(self) -> list[str]:
        """The state as short lines for the video picture and the console."""
        state = self.state()
        rate = "-" if state["blink_rate_per_min"] is None else f"{state['blink_rate_per_min']:.0f}/min"
        perclos = "-" if state["perclos"] is None else f"{100 * state['perclos']:.0f}%"
        lines = [f"blinks {state['blinks']} ({rate}) PERCLOS {perclos} yawns {state['yawns']}"]
        if state["drowsy"]:
            lines.append("DROWSY")
        return lines


class FaceMonitors:
    """One BlinkMonitor per tracked face: the hook for predict.py's video loop.

    ``observe(timestamp_s, track_id, face, landmarks_px, image_size)`` measures one tracked
    face and feeds its monitor: it returns the face's video-log JSON (docs/json_schema.md).
    ``update`` does the feeding alone for a face already measured; ``forget(active_ids)``
    drops the monitors of tracks that ended.
    """

    def __init__(self, options: BlinkOptions | None = None, measure_options: MeasureOptions | None = None):
        self.options = options or BlinkOptions()
        self.measure_options = measure_options or MeasureOptions()
        self.monitors: dict = {}

    def observe(self, timestamp_s: float, track_id, face: dict, landmarks_px: np.ndarray, image_size) -> dict:
        """``face`` (predict.faces_json's entry for one face) with ``track_id``, its
        measures (``pose``, ``eyes``, ``mouth``) and ``monitor`` (BlinkMonitor.update's
        state, ``new_events`` included)."""
        record = {"track_id": track_id, **face, **measure_face(landmarks_px, image_size, self.measure_options)}
        record["monitor"] = self.update(timestamp_s, track_id, record)
        return record

    def summary_lines(self, faces: list[dict]) -> dict:
        """{index in faces: the monitor's lines} for draw_measures' ``extra_lines``."""
        return {index: self.monitors[face["track_id"]].summary_lines()
                for index, face in enumerate(faces) if face.get("track_id") in self.monitors}

    def update(self, timestamp_s: float, track_id, face: dict) -> dict:
        monitor = self.monitors.setdefault(track_id, BlinkMonitor(self.options))
        eyes, mouth = face.get("eyes") or {}, face.get("mouth") or {}
        return monitor.update(timestamp_s, eyes.get("left_ear"), eyes.get("right_ear"), mouth.get("mar"))

    def forget(self, active_ids) -> None:
        active = set(active_ids)
        for track_id in [t for t in self.monitors if t not in active]:
            del self.monitors[track_id]


# ---------------------------------------------------------------------------------------
# Command-line flags from the option dataclasses
# ---------------------------------------------------------------------------------------

def event_text(track_id, event: dict) -> str:
    """A monitor's new event as a console line: 'face 1: blink at 12.30 s (0.20 s)'."""
    return (f"face {track_id}: {event['type'].replace('_', ' ')} at {event['start_s']:.2f} s "
            f"({event['duration_s']:.2f} s)")
