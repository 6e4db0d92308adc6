"""benchmarks/landmarks.py --e2e: faces found and NME on them, against hand-built faces."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import landmarks as benchmark
import dataset
import geometry


def square_face(x0: float, y0: float, side: float) -> np.ndarray:
    """68 points spread over a square; outer eye corners (36, 45) side/2 apart."""
    points = np.stack([np.linspace(x0, x0 + side, 68), np.linspace(y0, y0 + side, 68)], 1)
    points[36] = [x0 + side / 4, y0 + side / 3]
    points[45] = [x0 + 3 * side / 4, y0 + side / 3]
    return points


def test_score_e2e_counts_matched_faces_and_averages_their_nme():
    truth_a, truth_b = square_face(0, 0, 100), square_face(300, 0, 100)
    faces = {"one.jpg": [dataset.Face("one.jpg", (0, 0, 100, 100), truth_a)],
             "two.jpg": [dataset.Face("two.jpg", (300, 0, 100, 100), truth_b)]}
    # photo one: a far-away false face, then the real one with every point 5 px off
    # (NME 5 / 50 = 0.1); photo two: only a face elsewhere, so its face is missed
    found = {"one.jpg": [((600, 600, 50, 50), truth_a + 100), (geometry.box_from_landmarks(truth_a), truth_a + [3, 4])],
             "two.jpg": [((0, 0, 100, 100), truth_b)]}
    row = benchmark.score_e2e(found, faces)
    assert row["faces"] == 2 and row["found"] == 1
    assert row["nme_ion"] == pytest.approx(0.1)
    assert row["fr_008"] == 1.0


def test_score_e2e_with_nothing_found_has_no_nme():
    truth = square_face(0, 0, 100)
    row = benchmark.score_e2e({"one.jpg": []}, {"one.jpg": [dataset.Face("one.jpg", (0, 0, 100, 100), truth)]})
    assert row == {"faces": 1, "found": 0}


@pytest.mark.parametrize("face_width", [20.0, 64.0, 150.0, 400.0])
def test_place_face_puts_the_scaled_box_where_it_says(face_width):
    """bench_detector's canvases: the returned box is the scaled box, centred on the canvas,
    and the photo's content moved with it."""
    import cv2

    from benchmarks import detector as bench_detector
    from conftest import centroid, draw_dots

    box = (60.0, 40.0, 100.0, 120.0)  # centre (110, 100)
    photo = draw_dots(np.zeros((240, 300), np.uint8), [(110 - 0.5, 100 - 0.5)], sigma=8, amplitude=250)
    canvas, placed = bench_detector.place_face(cv2.cvtColor(photo, cv2.COLOR_GRAY2BGR), box, face_width, (640, 360))
    assert canvas.shape == (360, 640, 3)
    x, y, w, h = placed
    assert w == pytest.approx(face_width, rel=0.02) and h == pytest.approx(1.2 * face_width, rel=0.02)
    assert (x + w / 2, y + h / 2) == (pytest.approx(320, abs=0.5), pytest.approx(180, abs=0.5))
    # the dot drawn at the box centre (pixel centres: edge - 0.5) is at the placed box's centre
    found = centroid(np.clip(canvas[:, :, 0].astype(float) - 128, 0, None))
    np.testing.assert_allclose(found, [x + w / 2 - 0.5, y + h / 2 - 0.5], atol=0.1 * max(1.0, face_width / 100))


def test_pixel_sensitivity_is_zero_without_a_change_and_larger_for_int8(subset_dir):
    from conftest import REPO_DIR, TEST_XML

    faces = dataset.parse_dlib_xml(subset_dir / TEST_XML)[:12]
    images = {f.image_path: dataset.read_image(f.image_path) for f in faces}
    int8, float32 = REPO_DIR / "models/landmarks_int8.tflite", REPO_DIR / "models/landmarks_float32.tflite"
    assert benchmark.pixel_sensitivity(int8, faces, images, pixels=0) == 0.0
    moved_int8 = benchmark.pixel_sensitivity(int8, faces, images)
    moved_float = benchmark.pixel_sensitivity(float32, faces, images)
    # a grey level on 7 pixels is invisible; float32 barely moves, int8 rounds its activations
    assert 0 < moved_float < 0.02
    assert moved_int8 > 3 * moved_float


def test_an_unknown_split_is_refused_as_a_flag(capsys):
    with pytest.raises(SystemExit) as stop:
        benchmark.main(["--split", "hidden"])
    assert stop.value.code == 2
    assert "argument --split: invalid choice: 'hidden'" in capsys.readouterr().err
