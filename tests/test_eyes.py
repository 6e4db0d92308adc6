"""eyes.py and train_eyes.py: the eye crop's exact geometry (a left eye mirrored into a right
eye's place), the shipped eye model on real faces, and a short real training run with its
TFLite export."""

import json

import numpy as np
import pytest

import dataset
import evaluate
import eyes
import geometry
from conftest import REPO_DIR, TEST_XML, draw_dots, dot_centroid_near


def eye_points(outer_x, inner_x, y, upper=-4.0, lower=4.0):
    """Six eye points in the role order of eyes.RIGHT_EYE, corners on the row y."""
    a, b = outer_x + (inner_x - outer_x) / 3, outer_x + 2 * (inner_x - outer_x) / 3
    return np.array([[outer_x, y], [a, y + upper], [b, y + upper], [inner_x, y], [b, y + lower], [a, y + lower]])


def test_an_eye_crop_is_centred_level_and_two_eye_widths_wide():
    right = eye_points(60.0, 100.0, 120.0)  # 40 px wide: the crop covers 80 px in 48
    image = draw_dots(np.full((240, 240), 60, np.uint8), right, sigma=1.5, amplitude=150)
    crop, matrix = eyes.eye_crop(image, right, mirrored=False)
    scale = eyes.EYE_DIM / (eyes.EYE_SIDE * 40.0)
    centre = (eyes.EYE_DIM - 1) / 2
    expected = (right - right.mean(axis=0)) * scale + centre
    np.testing.assert_allclose(geometry.transform_points(right, matrix), expected, atol=1e-9)
    # the dots are where the matrix says, in the pixels
    for point in expected:
        np.testing.assert_allclose(dot_centroid_near(crop, point, radius=3), point, atol=0.15)


def test_a_left_eye_is_mirrored_into_the_place_of_a_right_eye():
    right = eye_points(60.0, 100.0, 120.0)
    # the left eye of the same face: mirrored about x = 140, so its outer corner is on the right
    left = right.copy()
    left[:, 0] = 280.0 - left[:, 0]
    _, right_matrix = eyes.eye_crop(np.zeros((240, 300), np.uint8), right, mirrored=False)
    _, left_matrix = eyes.eye_crop(np.zeros((240, 300), np.uint8), left, mirrored=True)
    np.testing.assert_allclose(geometry.transform_points(left, left_matrix),
                               geometry.transform_points(right, right_matrix), atol=1e-9)
    # and through the iBUG indices: point 45 (left outer corner) lands where 36 does
    face = np.zeros((68, 2))
    face[eyes.RIGHT_EYE], face[eyes.LEFT_EYE_MIRRORED] = right, left
    assert geometry.transform_points(face[[45]], left_matrix)[0, 0] < (eyes.EYE_DIM - 1) / 2


def test_a_turned_eye_is_cut_level():
    right = eye_points(60.0, 100.0, 120.0)
    theta = np.radians(25.0)
    turn = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    turned = (right - right.mean(axis=0)) @ turn.T + right.mean(axis=0)
    _, matrix = eyes.eye_crop(np.zeros((240, 240), np.uint8), turned, mirrored=False)
    in_crop = geometry.transform_points(turned, matrix)
    assert in_crop[0, 1] == pytest.approx(in_crop[3, 1], abs=1e-9)  # corners level
    assert in_crop[0, 0] < in_crop[3, 0]


def test_the_shipped_eye_model_sharpens_the_eyes_of_real_faces(subset_dir):
    """On 60 LFPW test faces (never trained on): the eye points after a second look are
    closer to the annotation than the int8 model's first pass, and the eye openness too."""
    import face_measures
    import predict

    faces = dataset.parse_dlib_xml(subset_dir / TEST_XML)[:60]
    first = predict.LandmarkModel(REPO_DIR / "models" / "landmarks_int8.tflite")
    refiner = eyes.EyeRefiner()
    images = [dataset.read_image_bgr(f.image_path) for f in faces]
    before = np.stack([first.predict_box(image, f.box_xywh) for image, f in zip(images, faces)])
    after = np.stack([refiner.refine(image, p) for image, p in zip(images, before)])
    truth = np.stack([f.landmarks_px for f in faces])
    np.testing.assert_array_equal(np.delete(after, np.r_[36:48], axis=1), np.delete(before, np.r_[36:48], axis=1))
    eye_error = lambda points: evaluate.point_errors(points, truth)[:, 36:48].mean()  # noqa: E731
    assert eye_error(after) < eye_error(before) - 0.002

    def ear(points):
        return np.stack([np.stack(face_measures.eye_aspect_ratios(p)) for p in points])

    assert np.abs(ear(after) - ear(truth)).mean() < np.abs(ear(before) - ear(truth)).mean()


def test_a_broken_eye_model_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="none.tflite: eye model not found"):
        eyes.EyeRefiner(tmp_path / "none.tflite")
    with pytest.raises(ValueError, match="landmarks_int8.tflite: not an eye model"):
        eyes.EyeRefiner(REPO_DIR / "models" / "landmarks_int8.tflite")


@pytest.mark.slow
def test_a_short_eye_training_run_exports_a_tflite_model_that_matches_keras(subset_dir, tmp_path):
    import train_eyes

    out = tmp_path / "eyes"
    assert train_eyes.main(["--data-dir", str(subset_dir), "--out-dir", str(out), "--epochs", "1",
                            "--jitters", "1", "--max-faces", "40"]) == 0
    meta = json.loads((out / "eyes.json").read_text())
    report = meta["validation"]
    assert meta["eye_dim"] == eyes.EYE_DIM and report["val_faces"] == 101 and report["train_faces"] == 40
    assert report["tflite_parity_px"] < 0.01
    assert {"eye_nme", "ear_mad", "narrow_ear"} <= set(report["refined"])
    # the exported model runs as predict.py runs it
    refiner = eyes.EyeRefiner(out / "eyes.tflite")
    assert refiner.run_crop(np.full((eyes.EYE_DIM, eyes.EYE_DIM), 128, np.uint8)).shape == (6, 2)


def test_train_eyes_refuses_bad_flags(capsys):
    import train_eyes

    for flag, value in (("--epochs", "0"), ("--jitters", "-1"), ("--val-fraction", "1.5"), ("--lr", "0")):
        with pytest.raises(SystemExit) as exit_info:
            train_eyes.parse_args(["--data-dir", "x", flag, value])
        assert exit_info.value.code == 2
        assert flag in capsys.readouterr().err
