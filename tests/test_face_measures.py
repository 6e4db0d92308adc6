"""Head pose, eye and mouth openness, blinks and yawns (face_measures.py).

Pose: the mean face projected at known angles is recovered; mirrored and rotated photos
change the angles as geometry says they must. Openness: hand-computed EAR and MAR on tiny
arrays. Accuracy: measures of predicted points against those of the annotated points on
LFPW test. Blinks and yawns: a sequence built from a real annotated face whose eyelids and
lips are moved for known frames.
"""

from __future__ import annotations

import argparse
import json

import cv2
import numpy as np
import pytest

import config
import dataset
from benchmarks import measures as evaluate_measures
import face_measures as fm
import geometry
import predict

IMAGE_SIZE = (640, 480)


# ---------------------------------------------------------------------------------------
# The 3D mean face and the angles
# ---------------------------------------------------------------------------------------

def test_mean_face_is_symmetric_and_life_size():
    mirrored = fm.MEAN_FACE_3D_CM[geometry.FLIP_PERMUTATION_68] * [-1.0, 1.0, 1.0]
    np.testing.assert_allclose(mirrored, fm.MEAN_FACE_3D_CM, atol=1e-9)
    assert len(fm.MEDIAPIPE_VERTICES_68) == fm.MEAN_FACE_3D_CM.shape[0] == 68
    # Adult outer canthal distance is about 9 cm; the nose tip is in front of the eyes.
    outer_eyes = np.linalg.norm(fm.MEAN_FACE_3D_CM[45] - fm.MEAN_FACE_3D_CM[36])
    assert 8.0 < outer_eyes < 10.0
    assert fm.MEAN_FACE_3D_CM[30, 2] < fm.MEAN_FACE_3D_CM[36:48, 2].min() - 2.0


@pytest.mark.parametrize("yaw, pitch, roll", [(0, 0, 0), (30, 0, 0), (0, -20, 0), (0, 0, 25),
                                              (-35, 15, -10), (20, 25, 40), (45, -30, -60)])
def test_angles_round_trip_through_the_rotation(yaw, pitch, roll):
    rotation = fm.rotation_from_angles(yaw, pitch, roll)
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(fm.angles_from_rotation(rotation), (yaw, pitch, roll), atol=1e-9)


def test_angle_signs_follow_the_image():
    """yaw > 0 sends the nose to the image's right, pitch > 0 up, roll > 0 lowers the
    eye on the image's right (geometry.roll_from_eyes' sign)."""
    translation = [0.0, 0.0, 60.0]
    frontal = fm.project_mean_face(0, 0, 0, translation, IMAGE_SIZE)
    nose_offset = lambda pts: pts[30] - (pts[36] + pts[45]) / 2  # noqa: E731
    assert nose_offset(fm.project_mean_face(20, 0, 0, translation, IMAGE_SIZE))[0] > nose_offset(frontal)[0] + 1
    assert nose_offset(fm.project_mean_face(0, 20, 0, translation, IMAGE_SIZE))[1] < nose_offset(frontal)[1] - 1
    rolled = fm.project_mean_face(0, 0, 10, translation, IMAGE_SIZE)
    assert rolled[45, 1] > rolled[36, 1] + 1


POSES = [(0, 0, 0, [0, 0, 50]), (0, 0, 0, [20, -15, 60]), (25, 0, 0, [0, 0, 60]), (-30, 10, 0, [5, -3, 70]),
         (10, -20, 15, [-8, 4, 45]), (-40, -15, -20, [0, 0, 80]), (15, 30, 30, [10, 8, 55])]


@pytest.mark.parametrize("yaw, pitch, roll, translation", POSES)
def test_known_poses_are_recovered_within_a_degree(yaw, pitch, roll, translation):
    """The mean face projected with a known camera, plus half a pixel of noise."""
    focal = 700.0
    rng = np.random.default_rng([yaw + 90, pitch + 90, roll + 90])
    points = fm.project_mean_face(yaw, pitch, roll, translation, IMAGE_SIZE, focal)
    noisy = points + rng.normal(0.0, 0.5, points.shape)
    pose = fm.head_pose(noisy, IMAGE_SIZE, focal_px=focal)
    assert abs(pose.yaw - yaw) < 1 and abs(pose.pitch - pitch) < 1 and abs(pose.roll - roll) < 1
    measures = fm.measure_face(noisy, IMAGE_SIZE, fm.MeasureOptions(focal_px=focal))
    assert abs(measures["pose"]["yaw"] - yaw) < 1 and measures["pose"]["reason"] is None


def test_a_face_looking_at_the_camera_has_no_yaw_or_pitch_anywhere_in_the_picture():
    for position in ([0, 0, 60], [25, 0, 60], [0, -20, 60], [-25, 18, 50]):
        # The head turned so that its forward axis points back at the camera.
        rotation = fm.line_of_sight_rotation(position)
        np.testing.assert_allclose(rotation @ [0, 0, 1], np.array(position) / np.linalg.norm(position))
        rvec = cv2.Rodrigues(rotation)[0]
        points = cv2.projectPoints(fm.MEAN_FACE_3D_CM, rvec, np.array(position, float),
                                   fm.camera_matrix(IMAGE_SIZE), np.zeros(4))[0][:, 0]
        pose = fm.head_pose(points, IMAGE_SIZE)
        assert (pose.yaw, pose.pitch, pose.roll) == pytest.approx((0, 0, 0), abs=1e-6)


def test_blinks_do_not_move_the_pose():
    """The eyelids are not among the points the pose is fitted to."""
    points = fm.project_mean_face(20, -10, 5, [3, 2, 60], IMAGE_SIZE)
    shut = points.copy()
    shut[[37, 38, 43, 44]] = points[[41, 40, 47, 46]]
    assert fm.measure_face(shut, IMAGE_SIZE)["pose"] == fm.measure_face(points, IMAGE_SIZE)["pose"]
    assert fm.measure_face(shut, IMAGE_SIZE)["eyes"]["left_ear"] == 0.0


def test_camera_is_guessed_from_the_image_size():
    np.testing.assert_allclose(fm.camera_matrix((640, 480)),
                               [[640, 0, 319.5], [0, 640, 239.5], [0, 0, 1]])
    np.testing.assert_allclose(fm.camera_matrix((480, 640))[0, 0], 640)  # portrait: the long side
    np.testing.assert_allclose(fm.camera_matrix((640, 480), focal_px=900)[1, 1], 900)


# ---------------------------------------------------------------------------------------
# Mirrored and rotated photos (real LFPW test faces)
# ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lfpw_faces(subset_dir):
    return dataset.parse_dlib_xml(subset_dir / "labels_ibug_300W_test.xml")


@pytest.fixture(scope="module")
def model():
    return predict.LandmarkModel(predict.DEFAULT_MODEL)


def turned_faces(faces, count: int = 4):
    """The LFPW faces with the largest annotated yaw, so a sign change means something."""
    def yaw_of(face):
        image_size = dataset.read_image(face.image_path).shape[1::-1]
        return abs(fm.head_pose(face.landmarks_px, image_size).yaw)
    return sorted(faces[:60], key=yaw_of)[-count:]


def mirror_points(points_px, width):
    mirrored = np.asarray(points_px, dtype=np.float64)[geometry.FLIP_PERMUTATION_68].copy()
    mirrored[:, 0] = width - 1 - mirrored[:, 0]
    return mirrored


def test_mirrored_points_give_opposite_yaw_and_roll(lfpw_faces):
    """Exact: the annotated points mirrored about the image centre (and re-indexed)."""
    for face in turned_faces(lfpw_faces):
        width, height = dataset.read_image(face.image_path).shape[1::-1]
        pose = fm.head_pose(face.landmarks_px, (width, height))
        mirrored = fm.head_pose(mirror_points(face.landmarks_px, width), (width, height))
        assert abs(pose.yaw) > 8
        assert mirrored.yaw == pytest.approx(-pose.yaw, abs=1e-4)
        assert mirrored.roll == pytest.approx(-pose.roll, abs=1e-4)
        assert mirrored.pitch == pytest.approx(pose.pitch, abs=1e-4)


def test_mirrored_photo_gives_opposite_yaw_and_roll(lfpw_faces, model):
    """The model run on the photo and on its mirror image: the yaw and roll change sign
    (each face), as exactly as the model's own left-right consistency allows (on average
    over the 8 most turned faces; single faces differ by up to ~6 degrees).

    The mean yaw mismatch is 2.06 degrees with the shipped model. It moves by about 0.1
    with nothing but the phase of the pre-shrink's area-averaging grid, which a photo and
    its mirror image do not share: 1.96 when framing cut the 1.8x training context, 2.01
    with a larger margin. The bound leaves room for that, not for a model that has lost
    its left-right consistency (a mirrored face whose yaw keeps its sign fails above)."""
    poses = []
    for face in turned_faces(lfpw_faces, count=8):
        image = predict.load_image(face.image_path)
        height, width = image.shape[:2]
        x, y, w, h = face.box_xywh
        box_mirrored = (width - x - w, y, w, h)
        pose = fm.measure_face(model.predict_box(image, face.box_xywh), (width, height))["pose"]
        mirrored = fm.measure_face(model.predict_box(image[:, ::-1].copy(), box_mirrored), (width, height))["pose"]
        poses.append([[pose[k], mirrored[k]] for k in ("yaw", "pitch", "roll")])
    yaw, pitch, roll = np.array(poses).transpose(1, 2, 0)  # each [2, faces]
    assert np.all(np.abs(yaw[0]) > 8) and np.all(np.sign(yaw[1]) == -np.sign(yaw[0]))
    assert np.abs(yaw[0] + yaw[1]).mean() < 2.4
    assert np.abs(roll[0] + roll[1]).mean() < 1.5
    assert np.abs(pitch[0] - pitch[1]).mean() < 2.5


def rotation_about_centre(width, height, angle_deg):
    """cv2's in-plane rotation about the principal point; angle > 0 turns the picture
    counter-clockwise on screen."""
    return cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), angle_deg, 1.0)


@pytest.mark.parametrize("angle", [-20.0, 12.0, 35.0])
def test_rotated_points_change_roll_by_the_angle(lfpw_faces, angle):
    """Exact: a rotation about the principal point is the camera turning about its axis."""
    for face in lfpw_faces[:5]:
        width, height = dataset.read_image(face.image_path).shape[1::-1]
        matrix = rotation_about_centre(width, height, angle)
        pose = fm.head_pose(face.landmarks_px, (width, height))
        turned = fm.head_pose(geometry.transform_points(face.landmarks_px, matrix), (width, height))
        assert turned.roll - pose.roll == pytest.approx(-angle, abs=1e-4)
        assert turned.yaw == pytest.approx(pose.yaw, abs=1e-4)
        assert turned.pitch == pytest.approx(pose.pitch, abs=1e-4)


@pytest.mark.parametrize("angle", [-15.0, 10.0])
def test_rotated_photo_changes_roll_by_the_angle(lfpw_faces, model, angle):
    """The model on a real photo turned in its plane (the box turned with it)."""
    changes = []
    for face in lfpw_faces[:6]:
        image = predict.load_image(face.image_path)
        height, width = image.shape[:2]
        matrix = rotation_about_centre(width, height, angle)
        rotated = cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR)
        box = geometry.box_from_landmarks(geometry.transform_points(face.landmarks_px, matrix))
        pose = fm.measure_face(model.predict_box(image, face.box_xywh), (width, height))["pose"]
        turned = fm.measure_face(model.predict_box(rotated, box), (width, height))["pose"]
        changes.append([turned["roll"] - pose["roll"], turned["yaw"] - pose["yaw"]])
    roll_change, yaw_change = np.mean(changes, axis=0)
    assert roll_change == pytest.approx(-angle, abs=1.0)
    assert abs(yaw_change) < 2.0


# ---------------------------------------------------------------------------------------
# Openness on hand-built points
# ---------------------------------------------------------------------------------------

def test_eye_aspect_ratio_by_hand():
    # p1 (0, 0) and p4 (4, 0) the corners: width 4; lids 1 + 2 and 1 + 1 apart.
    eye = np.array([[0, 0], [1, -1], [3, -2], [4, 0], [3, 1], [1, 2]], dtype=float)
    assert fm.eye_aspect_ratio(eye) == pytest.approx((3 + 3) / (2 * 4))
    closed = np.array([[0, 0], [1, 0], [3, 0], [4, 0], [3, 0], [1, 0]], dtype=float)
    assert fm.eye_aspect_ratio(closed) == 0.0
    assert fm.eye_aspect_ratio(np.stack([eye, closed, 2 * eye + 7])).tolist() == pytest.approx([0.75, 0.0, 0.75])


def hand_built_face():
    """68 points with both eyes and the inner lips set by hand (the rest far away)."""
    points = np.tile([[50.0, 80.0]], (68, 1)) + np.arange(68)[:, None] * [0.1, 0.0]
    points[geometry.RIGHT_EYE_68] = [[10, 20], [12, 18], [14, 18], [16, 20], [14, 22], [12, 22]]  # EAR 8/12
    points[geometry.LEFT_EYE_68] = [[30, 20], [32, 19], [34, 19], [36, 20], [34, 21], [32, 21]]  # EAR 4/12
    # Inner lips: corners 60 (20, 40) and 64 (28, 40); openings 1, 3 and 2.
    points[60:68] = [[20, 40], [22, 39.5], [24, 38.5], [26, 39], [28, 40], [26, 41], [24, 41.5], [22, 40.5]]
    return points


def test_eye_and_mouth_ratios_of_a_face_by_hand():
    points = hand_built_face()
    left, right = fm.eye_aspect_ratios(points)
    assert (left, right) == pytest.approx((4 / 12, 8 / 12))
    assert fm.mouth_aspect_ratio(points) == pytest.approx((1 + 3 + 2) / 3 / 8)
    batch = np.stack([points, points * 2])  # [N, 68, 2]; ratios do not depend on scale
    assert fm.mouth_aspect_ratio(batch).tolist() == pytest.approx([0.25, 0.25])
    assert fm.eye_aspect_ratios(batch)[0].tolist() == pytest.approx([1 / 3, 1 / 3])


# ---------------------------------------------------------------------------------------
# Accuracy against the annotations (LFPW test)
# ---------------------------------------------------------------------------------------

def test_measures_of_predicted_points_match_the_annotations(lfpw_faces, model):
    """Figures in the README (python -m benchmarks.measures --data-dir .../300w_subset).

    Measured with the shipped mobile-wide model: EAR 0.042, MAR 0.040, yaw 1.69, pitch 2.52,
    roll 0.74 degrees (targets: EAR within 0.03 - not met, the model's eyelids are coarse;
    yaw within 3 - met). The bounds sit a little above, so a regression fails here.
    """
    report = evaluate_measures.compare(model, lfpw_faces)
    diff = report["mean_abs_diff"]
    assert report["compared"] == len(lfpw_faces) == 224
    assert diff["ear"] < 0.045
    assert diff["mar"] < 0.044
    assert diff["yaw"] < 1.9
    assert diff["pitch"] < 2.8
    assert diff["roll"] < 0.85
    assert report["mean_face_fit_error"] < 0.04  # the 3D mean face fits real faces
    # The faces span real poses, so the differences are not small by lack of variety.
    assert report["annotated_max_abs"]["yaw"] > 30 and report["annotated_abs_mean"]["yaw"] > 5


# ---------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------

def assert_all_null(measures, reason_word):
    assert measures["pose"] == {"yaw": None, "pitch": None, "roll": None, "reason": measures["pose"]["reason"]}
    assert measures["eyes"]["left_ear"] is None and measures["eyes"]["right_ear"] is None
    assert measures["mouth"]["mar"] is None
    assert reason_word in measures["pose"]["reason"] and measures["eyes"]["reason"] == measures["pose"]["reason"]


def test_a_tiny_face_gets_nulls_and_a_reason():
    points = fm.project_mean_face(5, 0, 0, [0, 0, 400], IMAGE_SIZE)  # 14 px between the eyes
    measures = fm.measure_face(points, IMAGE_SIZE)
    assert_all_null(measures, "too small")
    assert "px between the outer eye corners" in measures["pose"]["reason"]
    assert_all_null(fm.measure_face(np.zeros((68, 2)), IMAGE_SIZE), "too small")


def test_a_face_turned_too_far_gets_nulls_and_a_reason():
    for yaw, pitch, word in [(70, 0, "too turned"), (-65, 5, "too turned"), (0, 55, "too tilted")]:
        points = fm.project_mean_face(yaw, pitch, 0, [0, 0, 50], IMAGE_SIZE)
        assert_all_null(fm.measure_face(points, IMAGE_SIZE), word)
    fine = fm.measure_face(fm.project_mean_face(45, 0, 0, [0, 0, 50], IMAGE_SIZE), IMAGE_SIZE)
    assert fine["pose"]["yaw"] == pytest.approx(45, abs=0.1) and fine["pose"]["reason"] is None


def test_points_that_are_no_face_get_nulls_never_an_angle():
    rng = np.random.default_rng(7)
    reasons = []
    for _ in range(20):
        measures = fm.measure_face(rng.uniform(100, 300, (68, 2)), IMAGE_SIZE)
        assert measures["pose"]["yaw"] is None and measures["mouth"]["mar"] is None
        reasons.append(measures["pose"]["reason"])
    assert sum("fit no face" in r for r in reasons) >= 15, reasons
    on_a_line = np.stack([np.linspace(100, 300, 68), np.full(68, 200.0)], axis=1)
    assert fm.measure_face(on_a_line, IMAGE_SIZE)["pose"]["yaw"] is None
    upside_down = fm.project_mean_face(0, 0, 180, [0, 0, 50], IMAGE_SIZE)  # a real pose
    assert abs(fm.measure_face(upside_down, IMAGE_SIZE)["pose"]["roll"]) == pytest.approx(180, abs=0.1)
    nan_points = fm.project_mean_face(0, 0, 0, [0, 0, 50], IMAGE_SIZE)
    nan_points[3] = np.nan
    assert_all_null(fm.measure_face(nan_points, IMAGE_SIZE), "not finite")
    with pytest.raises(ValueError, match=r"shape \(5, 2\)"):
        fm.measure_face(np.zeros((5, 2)), IMAGE_SIZE)


# ---------------------------------------------------------------------------------------
# Drawing and the JSON
# ---------------------------------------------------------------------------------------

def test_pose_axes_point_where_the_head_does():
    points = fm.project_mean_face(0, 0, 0, [0, 0, 50], IMAGE_SIZE)
    length = 0.8 * np.linalg.norm(points[45] - points[36])
    axes = fm.pose_axes_px(points, {"yaw": 0, "pitch": 0, "roll": 0})
    np.testing.assert_allclose(axes, points[30] + np.array([[0, 0], [length, 0], [0, -length], [0, 0]]), atol=1e-9)
    turned = fm.pose_axes_px(points, {"yaw": 90, "pitch": 0, "roll": 0})  # nose to the right
    np.testing.assert_allclose(turned[3] - turned[0], [length, 0], atol=1e-9)
    leaning = fm.pose_axes_px(points, {"yaw": 0, "pitch": 0, "roll": 90})  # x axis down
    np.testing.assert_allclose(leaning[1] - leaning[0], [0, length], atol=1e-9)


def test_draw_measures_draws_the_axes_and_survives_null_faces():
    points = fm.project_mean_face(30, 10, 0, [0, 0, 50], IMAGE_SIZE)
    face = {"box": [200, 150, 200, 200], "landmarks": points.tolist(),
            **fm.measure_face(points, IMAGE_SIZE)}
    tiny = {"box": [10, 10, 5, 5], "landmarks": (points / 40).tolist(), **fm.null_measures("face too small")}
    canvas = fm.draw_measures(np.zeros((480, 640, 3), np.uint8), [face, tiny], {0: ["blinks 3"]})
    ends = np.round(fm.pose_axes_px(points, face["pose"])).astype(int)
    for end, color in zip(ends[1:], fm.AXIS_COLORS_BGR):
        middle = np.round((ends[0] + 3 * end) / 4).astype(int)  # on the shaft, before the tip
        window = canvas[middle[1] - 2:middle[1] + 3, middle[0] - 2:middle[0] + 3].reshape(-1, 3)
        assert any((pixel == color).all() for pixel in window), f"no {color} axis near {middle}"


def test_image_record_carries_the_measures(model):
    image = predict.load_image(predict.Path(__file__).resolve().parents[1] / "imgs" / "test_image.jpeg")
    detections = predict.make_detector(predict.DEFAULT_DETECTOR).detect(image)
    record = predict.image_record("test_image.jpeg", image, model.predict_detections(image, detections))
    assert record["faces"]
    for face in record["faces"]:
        assert set(face["pose"]) == {"yaw", "pitch", "roll", "reason"}
        assert set(face["eyes"]) == {"left_ear", "right_ear", "reason"} and set(face["mouth"]) == {"mar", "reason"}
        if face["pose"]["reason"] is None:
            assert all(-90 < face["pose"][k] < 90 for k in ("yaw", "pitch"))
            assert 0.1 < face["eyes"]["left_ear"] < 0.6 and 0 <= face["mouth"]["mar"] < 1


# ---------------------------------------------------------------------------------------
# Blinks, PERCLOS, drowsiness and yawns
# ---------------------------------------------------------------------------------------

FPS = 30.0
# The mean EAR of both eyes per frame, as (first frame, values...); 0.33-ish elsewhere.
# Thresholds: closing below 0.21, open again above 0.25.
BLINKS_MADE = [(30, [0.15, 0.08, 0.08, 0.15]),  # a quick blink: 4 frames closed
               (90, [0.15, 0.08, 0.08, 0.08, 0.08, 0.08, 0.15]),  # 7 frames
               # EAR back up between the thresholds mid-closure: still one blink
               (150, [0.15, 0.08, 0.23, 0.23, 0.23, 0.08, 0.15]),
               (330, [0.08, 0.08, 0.15])]
NOT_BLINKS = [(210, [0.08]),  # one frame below the threshold: noise, not a blink
              (260, [0.23, 0.23, 0.23, 0.23])]  # eyes narrowed, never below 0.21
LONG_CLOSURE = (400, [0.08] * 36)  # 1.2 s: not a blink; drowsy
YAWN_MADE = (480, 90)  # mouth wide open for 3 s (frames 480-569)
MOUTH_OPENINGS = [(600, 15)]  # 0.5 s, as in speech: not a yawn
FRAMES = 700


def open_eye_face(faces):
    """A real annotated face with open eyes (EAR 0.30-0.36) and closed lips, big enough."""
    for face in faces:
        points = np.asarray(face.landmarks_px, dtype=np.float64)
        left, right = fm.eye_aspect_ratios(points)
        if (0.30 < left < 0.36 and 0.30 < right < 0.36 and fm.mouth_aspect_ratio(points) < 0.05
                and np.linalg.norm(points[45] - points[36]) > 70):
            return face
    raise AssertionError("no open-eyed face found")


def close_eyes(points_px, target_ear):
    """Each upper-lid point moved towards the lower-lid point under it until the eye's EAR
    is ``target_ear`` (moving p2 towards p6 and p3 towards p5 scales both lid distances)."""
    points = np.array(points_px, dtype=np.float64)
    for eye, pairs in ((geometry.RIGHT_EYE_68, ((37, 41), (38, 40))), (geometry.LEFT_EYE_68, ((43, 47), (44, 46)))):
        closure = 1.0 - target_ear / fm.eye_aspect_ratio(points[eye])
        for upper, lower in pairs:
            points[upper] += closure * (points[lower] - points[upper])
    return points


def open_mouth(points_px, drop_px):
    """Lower lip and jaw moved down by ``drop_px``."""
    points = np.array(points_px, dtype=np.float64)
    points[[65, 66, 67]] += [0, drop_px]
    points[55:60] += [0, drop_px]
    points[4:13] += [0, 0.8 * drop_px]
    return points


def synthetic_sequence(face):
    """Per frame: the face's points with eyelids and lips moved as scheduled above, plus
    0.15 px of noise on every point (seeded; about 0.004 on the EAR)."""
    target_ear = np.full(FRAMES, np.nan)
    for first, values in BLINKS_MADE + NOT_BLINKS + [LONG_CLOSURE]:
        target_ear[first:first + len(values)] = values
    mouth = np.zeros(FRAMES)
    inner_width = np.linalg.norm(face.landmarks_px[64] - face.landmarks_px[60])
    mouth[YAWN_MADE[0]:YAWN_MADE[0] + YAWN_MADE[1]] = 0.8 * inner_width  # MAR ~0.8
    for first, count in MOUTH_OPENINGS:
        mouth[first:first + count] = 0.8 * inner_width
    rng = np.random.default_rng(11)
    for frame in range(FRAMES):
        points = np.asarray(face.landmarks_px, dtype=np.float64)
        if not np.isnan(target_ear[frame]):
            points = close_eyes(points, target_ear[frame])
        points = open_mouth(points, mouth[frame])
        yield frame, points + rng.normal(0.0, 0.15, points.shape)


def test_the_blinks_made_are_exactly_the_blinks_found(lfpw_faces):
    face = open_eye_face(lfpw_faces)
    image_size = dataset.read_image(face.image_path).shape[1::-1]
    monitor = fm.BlinkMonitor()
    drowsy_frames, ears = [], []
    for frame, points in synthetic_sequence(face):
        measures = fm.measure_face(points, image_size)
        ears.append((measures["eyes"]["left_ear"] + measures["eyes"]["right_ear"]) / 2)
        state = monitor.update(frame / FPS, measures["eyes"]["left_ear"], measures["eyes"]["right_ear"],
                               measures["mouth"]["mar"])
        if state["drowsy"]:
            drowsy_frames.append(frame)
    blinks = [(round(e.start_s * FPS), round(e.end_s * FPS)) for e in monitor.events if e.kind == "blink"]
    assert blinks == [(first, first + len(values)) for first, values in BLINKS_MADE]
    long_closures = [(round(e.start_s * FPS), round(e.end_s * FPS)) for e in monitor.events if e.kind == "long_closure"]
    assert long_closures == [(LONG_CLOSURE[0], LONG_CLOSURE[0] + len(LONG_CLOSURE[1]))]
    yawns = [(round(e.start_s * FPS), round(e.end_s * FPS)) for e in monitor.events if e.kind == "yawn"]
    assert yawns == [(YAWN_MADE[0], YAWN_MADE[0] + YAWN_MADE[1])]
    # Drowsy once the long closure passes max_blink_s (0.5 s = 15 frames), not before.
    assert drowsy_frames[0] - LONG_CLOSURE[0] in (15, 16)
    state = monitor.state()
    assert state["blinks"] == 4 and state["long_closures"] == 1 and state["yawns"] == 1
    # PERCLOS over the whole (under a minute) sequence: the frames with EAR < 0.21.
    closed = np.array(ears[1:]) < 0.21
    assert state["perclos"] == pytest.approx(closed.mean(), abs=1e-3)
    assert state["blink_rate_per_min"] == pytest.approx(60 * 4 / ((FRAMES - 1) / FPS), abs=0.1)


def feed(monitor, ear_of_second, seconds, fps=10.0, start=0.0):
    state = None
    for i in range(int(round(seconds * fps))):
        t = start + i / fps
        ear = ear_of_second(t)
        state = monitor.update(t, ear, ear, 0.0)
    return state


def test_perclos_blink_rate_and_drowsiness_by_hand():
    """One minute at 10 frames/s; eyes shut (EAR 0.1) for the stated seconds."""
    def shut_between(spans):
        return lambda t: 0.1 if any(a <= t < b for a, b in spans) else 0.3
    # 12 blinks of 3 frames (0.3 s), one every 5 s: 3.6 s shut of 60 -> PERCLOS 0.06,
    # 12 blinks/min. Spans start half a frame early so no frame sits on an edge.
    blinks = [(5 * k + 0.95, 5 * k + 1.25) for k in range(12)]
    state = feed(fm.BlinkMonitor(), shut_between(blinks), 60.5)
    assert state["blinks"] == 12 and state["long_closures"] == 0
    assert state["perclos"] == pytest.approx(3.6 / 60, abs=0.002)
    assert state["blink_rate_per_min"] == pytest.approx(12, abs=0.3) and not state["drowsy"]
    # PERCLOS 0.155 (31 blinks of 0.3 s) is drowsy, 0.145 (29) is not.
    many = [(1.9 * k + 0.45, 1.9 * k + 0.75) for k in range(31)]
    state = feed(fm.BlinkMonitor(), shut_between(many), 60.5)
    assert state["perclos"] == pytest.approx(9.3 / 60, abs=0.002) and state["drowsy"]
    fewer = [(2 * k + 0.45, 2 * k + 0.75) for k in range(29)]
    state = feed(fm.BlinkMonitor(), shut_between(fewer), 60.5)
    assert state["perclos"] == pytest.approx(8.7 / 60, abs=0.002) and not state["drowsy"]
    # Too little video: no PERCLOS, no rate yet.
    state = feed(fm.BlinkMonitor(), shut_between([]), 5.0)
    assert state["perclos"] is None and state["blink_rate_per_min"] is None


def test_the_window_slides():
    monitor = fm.BlinkMonitor(fm.BlinkOptions(window_s=20.0))
    feed(monitor, lambda t: 0.1 if 1 <= t < 1.3 else 0.3, 10.0)  # one blink early on
    state = feed(monitor, lambda t: 0.3, 30.0, start=10.0)  # then 30 s open
    assert state["blinks"] == 1  # the total stays
    assert state["blink_rate_per_min"] == 0.0 and state["perclos"] == 0.0  # the window forgot it


def test_a_monitor_left_running_for_an_hour_holds_only_its_window():
    """An hour at 10 frames/s, a 0.3 s blink every 3 s (1,200 blinks): the totals count
    them all, while the monitor keeps only the last minute's events, so its memory and its
    work per frame do not grow with the hours (benchmarks/monitor.py times it)."""
    monitor = fm.BlinkMonitor()
    state = feed(monitor, lambda t: 0.1 if 1.05 <= t % 3 < 1.35 else 0.3, 3600.0)
    assert state["blinks"] == 1200 and monitor.count("blink") == 1200
    assert len(monitor.events) == 20  # the blinks that ended in the last 60 s
    assert state["blink_rate_per_min"] == pytest.approx(20.0, abs=0.4)
    assert state["perclos"] == pytest.approx(0.1, abs=0.002) and not state["drowsy"]


def test_gaps_and_missing_values():
    monitor = fm.BlinkMonitor()
    monitor.update(0.0, 0.3, 0.3, 0.0)
    monitor.update(0.1, 0.1, None, None)  # one eye only: its value is used
    monitor.update(0.2, None, 0.1, 0.0)
    monitor.update(1.5, 0.3, 0.3, 0.0)  # back after 1.3 s without values: the closure is dropped
    assert monitor.count("blink") == 0
    monitor.update(1.6, 0.1, 0.1, 0.0)
    monitor.update(1.7, 0.1, 0.1, 0.0)
    monitor.update(1.8, None, None, None)  # face lost for a frame
    assert monitor.update(1.9, 0.3, 0.3, 0.0)["new_events"] == [
        {"type": "blink", "start_s": 1.6, "end_s": 1.9, "duration_s": 0.3}]
    with pytest.raises(ValueError, match="timestamps must increase"):
        monitor.update(1.9, 0.3, 0.3, 0.0)


def test_face_monitors_keep_one_monitor_per_track():
    monitors = fm.FaceMonitors()
    shut = {"eyes": {"left_ear": 0.1, "right_ear": 0.1}, "mouth": {"mar": 0.0}}
    open_ = {"eyes": {"left_ear": 0.3, "right_ear": 0.3}, "mouth": {"mar": 0.0}}
    for i, (a, b) in enumerate([(open_, open_), (shut, open_), (shut, open_), (open_, open_)]):
        state_a = monitors.update(i / 30, "a", a)
        state_b = monitors.update(i / 30, "b", b)
    assert state_a["blinks"] == 1 and state_b["blinks"] == 0
    monitors.update(5 / 30, "c", {"eyes": None, "mouth": None, "pose": {"reason": "face too small"}})
    monitors.forget(["b", "c"])
    assert sorted(monitors.monitors) == ["b", "c"]


def test_options_become_command_line_flags():
    parser = argparse.ArgumentParser()
    config.add_option_flags(parser, fm.BlinkOptions, "blinks")
    config.add_option_flags(parser, fm.MeasureOptions, "measures")
    args = parser.parse_args(["--ear-close", "0.18", "--min-closed-frames", "3", "--focal-px", "900"])
    blink = config.options_from_args(args, fm.BlinkOptions)
    assert blink == fm.BlinkOptions(ear_close=0.18, min_closed_frames=3)
    assert config.options_from_args(args, fm.MeasureOptions) == fm.MeasureOptions(focal_px=900.0)
    assert "hysteresis" in parser.format_help()
    assert fm.event_text(2, {"type": "long_closure", "start_s": 3.0, "end_s": 4.2, "duration_s": 1.2}) == \
        "face 2: long closure at 3.00 s (1.20 s)"


def test_observe_gives_the_video_log_record_of_a_tracked_face():
    """FaceMonitors.observe: what the video loop calls per tracked face and frame."""
    monitors = fm.FaceMonitors()
    open_face = fm.project_mean_face(10, 0, 0, [0, 0, 50], IMAGE_SIZE)
    upper, lower = [37, 38, 43, 44], [41, 40, 47, 46]
    open_face[upper] += 0.4 * (open_face[upper] - open_face[lower])  # the mean face's EAR 0.23 -> 0.33
    shut_face = open_face.copy()
    shut_face[[37, 38, 43, 44]] = open_face[[41, 40, 47, 46]]
    records = []
    for frame, points in enumerate([open_face, shut_face, shut_face, open_face]):
        face = {"box": [0, 0, 10, 10], "score": 0.9, "landmarks": points.tolist(), "landmark_confidence": None}
        records.append(monitors.observe(frame / 30, 7, face, points, IMAGE_SIZE))
    last = records[-1]
    assert list(last)[:2] == ["track_id", "box"] and last["track_id"] == 7
    assert last["pose"]["yaw"] == pytest.approx(10, abs=0.1) and last["eyes"]["left_ear"] > 0.3
    assert [r["monitor"]["eyes_closed"] for r in records] == [False, True, True, False]
    assert last["monitor"]["blinks"] == 1 and last["monitor"]["new_events"][0]["type"] == "blink"
    assert monitors.summary_lines([last]) == {0: ["blinks 1 (-) PERCLOS - yawns 0"]}


def test_predict_takes_the_focal_length_for_the_pose(tmp_path, model):
    """predict.py --focal-px reaches the pose; the default is the image's longer side."""
    image_path = predict.Path(__file__).resolve().parents[1] / "imgs" / "test_image.jpeg"
    records = {}
    for focal in (None, 512, 3000):
        out = tmp_path / str(focal)
        argv = [str(image_path), "--out", str(out)] + ([] if focal is None else ["--focal-px", str(focal)])
        assert predict.main(argv) == predict.EXIT_OK
        records[focal] = json.loads((out / "test_image_landmarks.json").read_text())["faces"][0]
    assert records[None]["pose"] == records[512]["pose"]  # 512 x 512 photo
    points = np.array(records[3000]["landmarks"])
    expected = fm.measure_face(points, (512, 512), fm.MeasureOptions(focal_px=3000))["pose"]
    assert records[3000]["pose"] == pytest.approx(expected, abs=0.2)
    assert records[3000]["pose"] != records[None]["pose"]


@pytest.mark.parametrize("moved, onto, part, reason", [
    (39, 36, "eyes", "an eye's corners coincide"),
    (64, 60, "mouth", "the mouth's inner corners coincide")])
def test_a_ratio_over_coinciding_corners_is_null_with_a_reason_and_the_json_is_valid(moved, onto, part, reason):
    points = fm.project_mean_face(10, 5, 0, [0, 0, 50], IMAGE_SIZE)
    points[moved] = points[onto]
    measures = fm.measure_face(points, IMAGE_SIZE)
    assert measures["pose"]["reason"] is None  # the pose still fits
    assert reason in measures[part]["reason"]
    assert all(value is None for key, value in measures[part].items() if key != "reason")
    other = measures["mouth" if part == "eyes" else "eyes"]
    assert other["reason"] is None and all(v is not None for k, v in other.items() if k != "reason")
    json.dumps(measures, allow_nan=False)  # strict JSON: no NaN, no Infinity
    assert fm.measures_text({**measures, "landmarks": points.tolist()})[1].count("-") >= 1
