"""parts.py and train_parts.py: the exact geometry of the eye and mouth crops (a left eye
mirrored into a right eye's place, a mouth flipped with its points renamed), the shipped part
models on real faces, and a short real training run with its TFLite export."""

import json

import numpy as np
import pytest

import dataset
import evaluate
import parts
from parts import EYES, MOUTH
import geometry
from conftest import REPO_DIR, TEST_XML, draw_dots, dot_centroid_near


def eye_points(outer_x, inner_x, y, upper=-4.0, lower=4.0):
    """Six eye points in the role order of parts.RIGHT_EYE, corners on the row y."""
    a, b = outer_x + (inner_x - outer_x) / 3, outer_x + 2 * (inner_x - outer_x) / 3
    return np.array([[outer_x, y], [a, y + upper], [b, y + upper], [inner_x, y], [b, y + lower], [a, y + lower]])


def test_an_eye_crop_is_centred_level_and_two_eye_widths_wide():
    right = eye_points(60.0, 100.0, 120.0, upper=-12.0, lower=12.0)  # 40 px wide: 80 px in 48
    image = draw_dots(np.full((240, 240), 60, np.uint8), right, sigma=1.5, amplitude=150)
    crop, matrix = parts.part_crop(EYES, image, right, mirrored=False)
    scale = EYES.dim / (EYES.side * 40.0)
    centre = (EYES.dim - 1) / 2
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
    _, right_matrix = parts.part_crop(EYES, np.zeros((240, 300), np.uint8), right, mirrored=False)
    _, left_matrix = parts.part_crop(EYES, np.zeros((240, 300), np.uint8), left, mirrored=True)
    np.testing.assert_allclose(geometry.transform_points(left, left_matrix),
                               geometry.transform_points(right, right_matrix), atol=1e-9)
    # and through the iBUG indices: point 45 (left outer corner) lands where 36 does
    face = np.zeros((68, 2))
    face[parts.RIGHT_EYE], face[parts.LEFT_EYE_MIRRORED] = right, left
    assert geometry.transform_points(face[[45]], left_matrix)[0, 0] < (EYES.dim - 1) / 2


def test_a_mirrored_mouth_crop_renames_its_points_as_the_mirror_image():
    """Flipped for training, the mouth's left corner (48) lands where the right corner (54) was,
    so the targets follow MOUTH.flip_order: point i of the flipped mouth is point
    flip_order[i] of the original."""
    rng = np.random.default_rng(0)
    mouth = np.column_stack([np.linspace(80, 140, 20), 150 + rng.uniform(-12, 12, 20)])
    mouth[0], mouth[6] = [80, 150], [140, 150]  # corners 48 and 54, level
    image = np.zeros((300, 300), np.uint8)
    _, plain = parts.part_crop(MOUTH, image, mouth, mirrored=False)
    _, flipped = parts.part_crop(MOUTH, image, mouth, mirrored=False, flip=True)
    plain_pts = geometry.transform_points(mouth, plain)
    flipped_pts = geometry.transform_points(mouth, flipped)
    np.testing.assert_allclose(flipped_pts[:, 0], MOUTH.dim - 1 - plain_pts[:, 0], atol=1e-9)
    renamed = flipped_pts[list(MOUTH.flip_order)]
    assert MOUTH.flip_order[0] == 6 and MOUTH.flip_order[6] == 0  # 48 <-> 54
    np.testing.assert_allclose(renamed[0], [MOUTH.dim - 1 - plain_pts[6, 0], plain_pts[6, 1]], atol=1e-9)
    # a wide-open mouth is cut by its height
    tall = mouth.copy()
    tall[:, 1] = 150 + (tall[:, 1] - 150) * 8
    assert parts.part_square(MOUTH, tall, False)[1] > parts.part_square(MOUTH, mouth, False)[1] * 1.5


def test_a_turned_eye_is_cut_level():
    right = eye_points(60.0, 100.0, 120.0)
    theta = np.radians(25.0)
    turn = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    turned = (right - right.mean(axis=0)) @ turn.T + right.mean(axis=0)
    _, matrix = parts.part_crop(EYES, np.zeros((240, 240), np.uint8), turned, mirrored=False)
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
    refiner = parts.PartRefiner(EYES)
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


def test_a_broken_part_model_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="none.tflite: eyes model not found"):
        parts.PartRefiner(EYES, tmp_path / "none.tflite")
    with pytest.raises(ValueError, match="landmarks_int8.tflite: not a mouth model"):
        parts.PartRefiner(MOUTH, REPO_DIR / "models" / "landmarks_int8.tflite")


@pytest.mark.slow
def test_a_short_mouth_training_run_exports_a_tflite_model_that_matches_keras(subset_dir, tmp_path, capsys):
    import train_parts

    out = tmp_path / "mouth"
    assert train_parts.main(["--part", "mouth", "--data-dir", str(subset_dir), "--out-dir", str(out),
                             "--epochs", "1", "--jitters", "1", "--max-faces", "40"]) == 0
    meta = json.loads((out / "mouth.json").read_text())
    report = meta["validation"]
    assert meta["part"] == "mouth" and meta["dim"] == MOUTH.dim
    assert report["val_faces"] == 101 and report["train_faces"] == 40 and report["count"] == 101
    assert report["format"] == "int8" and report["tflite_bytes"] == (out / "mouth.tflite").stat().st_size
    assert report["tflite_parity_px"] < 0.25  # int8: a quarter of a crop pixel on average
    assert {"nme", "openness_mad"} <= set(report["refined"])
    # the exported model runs as predict.py runs it
    refiner = parts.PartRefiner(MOUTH, out / "mouth.tflite")
    crop = np.full((MOUTH.dim, MOUTH.dim), 128, np.uint8)
    assert refiner.run_crop(crop).shape == (20, 2)

    # --weights: the same weights exported again, without training, give the same model
    again = tmp_path / "again"
    assert train_parts.main(["--part", "mouth", "--data-dir", str(subset_dir), "--out-dir", str(again),
                             "--jitters", "1", "--max-faces", "40",
                             "--weights", str(out / "mouth_best.weights.h5")]) == 0
    assert not (again / "mouth_best.weights.h5").exists()
    np.testing.assert_allclose(parts.PartRefiner(MOUTH, again / "mouth.tflite").run_crop(crop),
                               refiner.run_crop(crop), atol=0.05)
    # and weights of another part's network are refused, by name
    assert train_parts.main(["--part", "eyes", "--data-dir", str(subset_dir), "--out-dir", str(tmp_path / "e"),
                             "--jitters", "1", "--max-faces", "5",
                             "--weights", str(out / "mouth_best.weights.h5")]) == 2
    assert "mouth_best.weights.h5: not the eyes network's weights" in capsys.readouterr().err


def test_train_parts_refuses_bad_flags(capsys):
    import train_parts

    for flag, value in (("--epochs", "0"), ("--jitters", "-1"), ("--val-fraction", "1.5"), ("--lr", "0"),
                        ("--part", "nose"), ("--weights", "no/such.weights.h5")):
        with pytest.raises(SystemExit) as exit_info:
            train_parts.parse_args(["--data-dir", "x", flag, value])
        assert exit_info.value.code == 2
        assert flag in capsys.readouterr().err
