"""The per-point confidence and face score of the shipped model, the roll correction of the
crop, and the JSON that carries both: on real LFPW-test faces and hand-built geometry."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

import geometry
import predict
from conftest import REPO_DIR

INT8_MODEL = REPO_DIR / "models" / "landmarks_int8.tflite"
FLOAT_MODEL = REPO_DIR / "models" / "landmarks_float32.tflite"


@pytest.fixture(scope="module")
def lfpw_faces(subset_dir):
    import dataset

    return dataset.parse_dlib_xml(subset_dir / "labels_ibug_300W_test.xml")[:40]


@pytest.fixture(scope="module")
def int8_model():
    return predict.LandmarkModel(INT8_MODEL)


def nme(points, truth) -> float:
    import evaluate

    return float(evaluate.nme(np.asarray(points)[None], np.asarray(truth)[None])[0])


# --- roll ------------------------------------------------------------------------------

def test_roll_from_eyes_is_the_angle_of_the_eye_line():
    assert geometry.roll_from_eyes((10, 20), (30, 20)) == 0.0
    # The eye on the image's right is lower (y down): positive.
    assert geometry.roll_from_eyes((0, 0), (10, 10)) == pytest.approx(45.0)
    assert geometry.roll_from_eyes((0, 0), (10, -10 * math.tan(math.radians(30)))) == pytest.approx(-30.0)
    # Upside down: the person's right eye is on the image's right.
    assert abs(geometry.roll_from_eyes((30, 20), (10, 20))) == pytest.approx(180.0)


def test_roll_from_landmarks_uses_the_eye_centres():
    points = np.zeros((68, 2))
    points[36:42] = [[0, 0], [2, -1], [4, -1], [6, 0], [4, 1], [2, 1]]  # centre (3, 0)
    points[42:48] = points[36:42] + [20, 20]  # centre (23, 20)
    assert geometry.roll_from_landmarks(points) == pytest.approx(45.0)


@pytest.mark.parametrize("roll", [-35.0, 12.5, 40.0])
def test_cropping_with_the_roll_levels_the_eyes(roll):
    theta = math.radians(roll)
    right_eye = np.array([100.0, 100.0])
    left_eye = right_eye + 50 * np.array([math.cos(theta), math.sin(theta)])
    measured = geometry.roll_from_eyes(right_eye, left_eye)
    assert measured == pytest.approx(roll)
    matrix = geometry.crop_matrix((125, 110), 120, 128, angle_deg=measured)
    in_crop = geometry.transform_points(np.stack([right_eye, left_eye]), matrix)
    assert in_crop[0, 1] == pytest.approx(in_crop[1, 1], abs=1e-9)
    assert in_crop[1, 0] > in_crop[0, 0]  # still the right eye on the crop's left


@pytest.mark.parametrize("angle", [-30.0, 30.0])
def test_a_tilted_face_is_found_again_when_its_roll_is_undone(int8_model, lfpw_faces, angle):
    """Rotate real photos about the face by a known angle: with the roll undone the points
    come back as on the upright photo; without it the model sees a tilted face and errs more."""
    upright_errors, corrected_errors, uncorrected_errors = [], [], []
    for face in lfpw_faces[:12]:
        image = cv2.imread(face.image_path)
        centre = face.landmarks_px.mean(axis=0)
        # cv2's angle is counter-clockwise on screen: the face's eye line turns by -angle.
        rotation = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), angle, 1.0)
        rotated = cv2.warpAffine(image, rotation, (image.shape[1], image.shape[0]),
                                 borderMode=cv2.BORDER_REPLICATE)
        truth = geometry.transform_points(face.landmarks_px, rotation)
        roll = geometry.roll_from_landmarks(truth)
        assert roll == pytest.approx(geometry.roll_from_landmarks(face.landmarks_px) - angle, abs=1e-6)
        box = geometry.box_from_landmarks(truth)  # an upright box around the tilted face
        upright_errors.append(nme(int8_model.predict_face(image, face.box_xywh).landmarks_px,
                                  face.landmarks_px))
        corrected = int8_model.predict_face(rotated, box, roll_deg=roll)
        assert corrected.roll_deg == roll
        corrected_errors.append(nme(corrected.landmarks_px, truth))
        uncorrected_errors.append(nme(int8_model.predict_face(rotated, box).landmarks_px, truth))
    assert np.mean(corrected_errors) < np.mean(upright_errors) + 0.006
    assert np.mean(corrected_errors) < np.mean(uncorrected_errors)


# --- confidence ------------------------------------------------------------------------

@pytest.mark.parametrize("model_path", [INT8_MODEL, FLOAT_MODEL], ids=["int8", "float32"])
def test_the_shipped_models_give_a_confidence_per_point(model_path, lfpw_faces):
    model = predict.LandmarkModel(model_path)
    assert model.has_confidence
    face = lfpw_faces[0]
    result = model.predict_face(cv2.imread(face.image_path), face.box_xywh)
    assert result.landmark_confidence.shape == (68,)
    assert np.all((result.landmark_confidence >= 0) & (result.landmark_confidence <= 1))
    assert result.score == pytest.approx(result.landmark_confidence.mean())


def test_faces_score_high_and_crops_without_a_face_score_low(int8_model, lfpw_faces):
    face_scores, empty_scores, half_scores = [], [], []
    rng = np.random.default_rng(0)
    for face in lfpw_faces:
        image = cv2.imread(face.image_path)
        x, y, w, h = face.box_xywh
        face_scores.append(int8_model.predict_face(image, face.box_xywh).score)
        # The same photo, the face box moved 70 % of its width sideways: half a face at most.
        half_scores.append(int8_model.predict_face(image, (x + 0.7 * w, y, w, h)).score)
        # A flat grey wall with sensor noise, and a random texture: nothing face-like.
        wall = np.clip(rng.normal(128, 6, image.shape), 0, 255).astype(np.uint8)
        empty_scores.append(int8_model.predict_face(wall, face.box_xywh).score)
    threshold = predict.FACE_SCORE_THRESHOLD
    assert np.median(face_scores) > 0.85
    assert np.mean(np.array(face_scores) >= threshold) >= 0.95
    assert np.mean(np.array(half_scores) < threshold) >= 0.9
    assert max(empty_scores) < threshold


def test_confidence_goes_into_the_json(int8_model, lfpw_faces):
    face = lfpw_faces[1]
    image = cv2.imread(face.image_path)
    record = predict.image_record("photo.jpg", image, int8_model.predict(image, [face.box_xywh]))
    (entry,) = record["faces"]
    assert set(entry) == {"box", "score", "landmarks", "landmark_confidence", "pose", "eyes", "mouth"}
    assert len(entry["landmark_confidence"]) == 68 and 0 < entry["score"] <= 1
    assert entry["score"] == pytest.approx(np.mean(entry["landmark_confidence"]), abs=1e-3)


def test_a_model_without_the_confidence_output_still_predicts(tmp_path, lfpw_faces):
    """Models exported before the confidence output (and the xception network) give null
    scores and the same points."""
    import json

    import export_tflite
    from model import build_network

    shipped = REPO_DIR / "models" / "keras"
    network = build_network(json.loads((shipped / "config.json").read_text())["arch"], 128)
    network.load_weights(str(shipped / "best_model.weights.h5"))
    single = tmp_path / "single_output.tflite"
    single.write_bytes(export_tflite.convert(network, "float32", None))
    single.with_suffix(".json").write_text(FLOAT_MODEL.with_suffix(".json").read_text())
    old_style = predict.LandmarkModel(single)
    assert not old_style.has_confidence
    face = lfpw_faces[0]
    image = cv2.imread(face.image_path)
    result = old_style.predict_face(image, face.box_xywh)
    assert result.score is None and result.landmark_confidence is None
    with_confidence = predict.LandmarkModel(FLOAT_MODEL).predict_face(image, face.box_xywh)
    assert np.abs(result.landmarks_px - with_confidence.landmarks_px).max() < 0.01
    (entry,) = predict.faces_json([result])
    assert entry["score"] is None and entry["landmark_confidence"] is None
    assert json.loads(json.dumps(entry)) == entry


def test_evaluate_reports_face_scores_on_faces_and_on_moved_boxes(lfpw_faces):
    import evaluate

    runner = evaluate.load_landmark_model(INT8_MODEL)
    check = evaluate.face_score_check(runner, lfpw_faces[:10])
    assert check["faces"]["count"] == check["moved_boxes"]["count"] == 10
    assert check["faces"]["p05"] > check["moved_boxes"]["p95"]
    assert check["faces"]["above_threshold"] == 1.0 and check["moved_boxes"]["above_threshold"] <= 0.1
    scores = [predict.LandmarkModel(INT8_MODEL).predict_face(cv2.imread(f.image_path), f.box_xywh).score
              for f in lfpw_faces[:10]]
    assert check["faces"]["median"] == pytest.approx(np.median(scores), abs=1e-6)
    assert "moved_boxes" in evaluate.format_face_scores(check)


@pytest.mark.parametrize("roll", [0.0, 30.0, -90.0])
def test_the_crop_of_a_rolled_face_is_shifted_down_the_face_not_the_photo(roll):
    """frame_face shifts the crop down the photo by crop_shift_y of its side; with the roll
    correction the shift runs down the face: the crop centre sits at the box centre plus
    crop_shift_y * side along the face's own "down" direction."""
    box, margin, shift_y, dim = (100.0, 80.0, 60.0, 60.0), 0.2, 0.06, 64
    image = np.zeros((300, 300), np.uint8)
    correction = geometry.roll_shift_correction(shift_y, roll)
    _, matrix = geometry.frame_face(image, box, dim, margin, shift_y, angle_deg=roll, shift_xy=correction)
    side = 60.0 * (1 + 2 * margin)
    theta = math.radians(roll)
    box_centre = np.array([100 + 30 - 0.5, 80 + 30 - 0.5])
    expected = box_centre + shift_y * side * np.array([-math.sin(theta), math.cos(theta)])
    crop_centre = geometry.transform_points(np.array([[(dim - 1) / 2, (dim - 1) / 2]]), geometry.invert(matrix))[0]
    assert crop_centre == pytest.approx(expected, abs=1e-9)
