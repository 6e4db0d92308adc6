"""face_detector.py: SSD anchors, letterbox geometry, decoding and weighted NMS against
hand-computed values; MediaPipe's BlazeFace models on real faces (boxes on the annotated
faces, eye keypoints on the annotated eyes); roll correction on rotated real photos; and
every bad input."""

from __future__ import annotations

import math
import shutil
import subprocess

import cv2
import numpy as np
import pytest

from benchmarks import detector as bench_detector
import dataset
import evaluate
import face_detector as fd
import geometry
import predict
from conftest import REPO_DIR, centroid, draw_dots

SHORT, FULL = fd.BLAZEFACE_SPECS["short"], fd.BLAZEFACE_SPECS["full"]


# ---------------------------------------------------------------------------------------
# Anchors, letterbox, decoding, NMS: exact values on hand-built inputs
# ---------------------------------------------------------------------------------------

def test_short_range_anchors_follow_mediapipe_ssd_layout():
    anchors = fd.ssd_anchor_centres(128, (8, 16, 16, 16), interpolated_anchor=True)
    assert anchors.shape == (896, 2)
    # stride 8: 16 x 16 cells, 2 anchors each (aspect ratio 1 + the interpolated one), row by row
    np.testing.assert_allclose(anchors[0], anchors[1])
    np.testing.assert_allclose(anchors[0], [0.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(anchors[2], [1.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(anchors[32], [0.5 / 16, 1.5 / 16])  # second row
    np.testing.assert_allclose(anchors[511], [15.5 / 16, 15.5 / 16])
    # the three stride-16 layers share one 8 x 8 map: 6 anchors per cell
    np.testing.assert_allclose(anchors[512:518], np.tile([0.5 / 8, 0.5 / 8], (6, 1)))
    np.testing.assert_allclose(anchors[518], [1.5 / 8, 0.5 / 8])
    np.testing.assert_allclose(anchors[-1], [7.5 / 8, 7.5 / 8])


def test_full_range_anchors_are_one_per_cell_of_a_48_grid():
    anchors = fd.ssd_anchor_centres(192, (4,), interpolated_anchor=False)
    assert anchors.shape == (2304, 2)
    np.testing.assert_allclose(anchors[0], [0.5 / 48, 0.5 / 48])
    np.testing.assert_allclose(anchors[1], [1.5 / 48, 0.5 / 48])
    np.testing.assert_allclose(anchors[48], [0.5 / 48, 1.5 / 48])


@pytest.mark.parametrize("width, height", [(400, 200), (150, 300), (128, 128), (1000, 250), (1203, 777),
                                           (90, 60)])
def test_letterbox_centres_the_photo_and_maps_points_exactly(width, height):
    dim = 128
    points = np.array([[0.3 * width, 0.4 * height], [0.8 * width - 0.27, 0.7 * height + 0.31]])
    photo = draw_dots(np.zeros((height, width), np.uint8), points, sigma=max(width, height) / 40,
                      amplitude=250)
    square, scale, pad = fd.letterbox(cv2.cvtColor(photo, cv2.COLOR_GRAY2RGB), dim)
    assert square.shape == (dim, dim, 3)
    fit = dim / max(width, height)
    new_w, new_h = round(width * fit), round(height * fit)
    # a halving may drop an odd last row or column: the scale is then a little larger
    kept_w, kept_h = new_w / scale[0], new_h / scale[1]
    assert width - 4 <= kept_w <= width and height - 4 <= kept_h <= height
    np.testing.assert_allclose(pad, [(dim - new_w) // 2, (dim - new_h) // 2])
    # the border around the photo is black, the photo area is not all black
    inside = np.zeros((dim, dim), bool)
    inside[int(pad[1]):int(pad[1]) + new_h, int(pad[0]):int(pad[0]) + new_w] = True
    assert not np.any(square[~inside])
    # each dot's centroid in the square is where the mapping says (pixel centres: edge - 0.5)
    for point in points:
        expected = (point + 0.5) * scale + pad - 0.5
        window = square[:, :, 0].astype(float)
        yy, xx = np.indices(window.shape)
        near = np.hypot(xx - expected[0], yy - expected[1]) < max(2.0, 0.15 * dim * min(scale))
        assert np.linalg.norm(centroid(window * near) - expected) < 0.35
    # and back: the inverse used for detections returns the photo point
    np.testing.assert_allclose(fd.square_to_photo_points(((points + 0.5) * scale + pad) / dim, dim, scale, pad),
                               points, atol=1e-9)


def test_decode_by_hand():
    anchors = np.array([[0.25, 0.5], [0.75, 0.75], [0.5, 0.5]])
    regressors = np.zeros((3, 16))
    regressors[0, :4] = [12.8, -6.4, 32.0, 64.0]  # centre +0.1, -0.05 of 128; size 0.25 x 0.5
    regressors[0, 4:] = np.arange(12) * 1.28      # keypoint k: (+0.02 k, +0.01 + 0.02 k)
    regressors[1, :4] = [0, 0, 12.8, 12.8]
    logits = np.array([[3.0], [1000.0], [-1.0]])  # the last is below min_score 0.5
    boxes, keypoints, scores = fd.decode(regressors, logits, anchors, 128, min_score=0.5)
    np.testing.assert_allclose(scores, [1 / (1 + math.exp(-3)), 1 / (1 + math.exp(-100))])
    np.testing.assert_allclose(boxes[0], [0.35 - 0.125, 0.45 - 0.25, 0.35 + 0.125, 0.45 + 0.25])
    np.testing.assert_allclose(boxes[1], [0.7, 0.7, 0.8, 0.8])
    expected_points = anchors[0] + np.stack([0.02 * np.arange(6), 0.01 + 0.02 * np.arange(6)], 1)
    np.testing.assert_allclose(keypoints[0], expected_points)
    np.testing.assert_allclose(keypoints[1], np.tile(anchors[1], (6, 1)))


def test_weighted_nms_merges_overlaps_by_score_and_keeps_the_best_score():
    boxes = np.array([[0.0, 0.0, 10.0, 10.0],     # best
                      [50.0, 50.0, 60.0, 60.0],   # apart: its own face
                      [1.0, 1.0, 11.0, 11.0],     # IoU 81/119 = 0.68 with the best
                      [0.0, 6.0, 10.0, 16.0]])    # IoU 40/160 = 0.25 with the best: stays
    scores = np.array([0.9, 0.8, 0.6, 0.7])
    keypoints = np.stack([np.full((6, 2), v) for v in (0.0, 5.0, 10.0, 20.0)])
    out_boxes, out_points, out_scores = fd.weighted_nms(boxes, keypoints, scores, iou_threshold=0.3)
    np.testing.assert_allclose(out_scores, [0.9, 0.8, 0.7])
    np.testing.assert_allclose(out_boxes[0], (0.9 * boxes[0] + 0.6 * boxes[2]) / 1.5)
    np.testing.assert_allclose(out_points[0], np.full((6, 2), 0.6 * 10.0 / 1.5))
    np.testing.assert_allclose(out_boxes[1], boxes[1])
    np.testing.assert_allclose(out_boxes[2], boxes[3])
    np.testing.assert_allclose(out_points[2], keypoints[3])


def test_weighted_nms_of_nothing_and_of_a_zero_area_box():
    boxes, points, scores = fd.weighted_nms(np.zeros((0, 4)), np.zeros((0, 6, 2)), np.zeros(0))
    assert boxes.shape == (0, 4) and points.shape == (0, 6, 2) and scores.shape == (0,)
    boxes, _, scores = fd.weighted_nms(np.array([[5.0, 5.0, 5.0, 5.0]] * 2), np.zeros((2, 6, 2)),
                                       np.array([0.7, 0.6]))
    assert len(scores) == 2  # no overlap to merge on, and no endless loop


def test_map_box_to_training_turns_the_shift_with_the_roll():
    box = (100.0, 200.0, 40.0, 10.0)  # centre (120, 205), sqrt(w h) = 20
    assert fd.map_box_to_training(box, 1.5, 0.0, 0.0) == pytest.approx((105.0, 190.0, 30.0, 30.0))
    # a shift down by 0.5 h = 5 px: at roll 90 the face's "down" points to the image's left
    assert fd.map_box_to_training(box, 1.0, 0.0, 0.5) == pytest.approx((110.0, 200.0, 20.0, 20.0))
    assert fd.map_box_to_training(box, 1.0, 0.0, 0.5, roll_deg=90) == pytest.approx((105.0, 195.0, 20.0, 20.0))


# ---------------------------------------------------------------------------------------
# The real models on real faces
# ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lfpw_faces(subset_dir):
    faces = dataset.parse_dlib_xml(subset_dir / "labels_ibug_300W_test.xml")
    return faces[::11]  # 21 faces spread over the set


@pytest.mark.parametrize("detector_range", ["short", "full"])
def test_blazeface_finds_the_annotated_faces_and_their_eyes(lfpw_faces, detector_range):
    detector = fd.make_detector("blazeface", range=detector_range)
    missed, eye_errors, training_ious = 0, [], []
    for face in lfpw_faces:
        detections = detector.detect(dataset.read_image_bgr(face.image_path))
        best = max(detections, default=None, key=lambda d: evaluate.box_iou(d.box_xywh, face.box_xywh))
        if best is None or evaluate.box_iou(best.box_xywh, face.box_xywh) < 0.5:
            missed += 1
            continue
        assert 0.5 <= best.score <= 1.0
        assert best.keypoints_px.shape == (6, 2)
        inter_ocular = np.linalg.norm(face.landmarks_px[36] - face.landmarks_px[45])
        # keypoint 0 is the person's right eye: points 36-41, on the image's left
        eye_errors.append([np.linalg.norm(best.keypoints_px[0] - face.landmarks_px[36:42].mean(0)),
                           np.linalg.norm(best.keypoints_px[1] - face.landmarks_px[42:48].mean(0))]
                          / inter_ocular)
        training_ious.append(evaluate.box_iou(best.training_box_xywh, face.box_xywh))
        assert abs(best.roll_deg - geometry.roll_from_landmarks(face.landmarks_px)) < 8
    assert missed <= 1
    assert np.median(eye_errors) < 0.08 and np.max(eye_errors) < 0.3
    # the training box frames the face as the dataset's box does
    assert np.median(training_ious) > 0.7 and min(training_ious) > 0.45


def test_decoding_matches_a_brute_force_reading_of_the_raw_outputs(lfpw_faces):
    """The best anchor's raw regressors, read by hand, give the detection (before NMS)."""
    model = fd.BlazeFaceModel(SHORT)
    photo = fd.as_rgb(dataset.read_image_bgr(lfpw_faces[0].image_path))
    square, scale, pad = fd.letterbox(photo, 128)
    regressors, logits = model.run(square)
    best = int(np.argmax(logits))
    anchor = model.anchors[best]
    cx, cy, w, h = regressors[best, :4] / 128 + [anchor[0], anchor[1], 0, 0]
    boxes, keypoints, scores = fd.decode(regressors, logits, model.anchors, 128, 0.0)
    index = int(np.argmax(scores))
    np.testing.assert_allclose(boxes[index], [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], rtol=1e-6)
    np.testing.assert_allclose(keypoints[index, 0], regressors[best, 4:6] / 128 + anchor, rtol=1e-6)
    assert scores[index] == pytest.approx(1 / (1 + np.exp(-logits[best])))


def test_any_photo_size_and_channel_layout(lfpw_faces):
    detector = fd.make_detector("blazeface")
    photo = dataset.read_image_bgr(lfpw_faces[0].image_path)
    for image in (np.zeros((1, 1, 3), np.uint8), np.zeros((1, 2000, 3), np.uint8),
                  np.zeros((3000, 2, 3), np.uint8), np.full((480, 640, 3), 128, np.uint8)):
        assert detector.detect(image) == []
    grey = cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY)
    bgra = cv2.cvtColor(photo, cv2.COLOR_BGR2BGRA)
    for image in (grey, grey[:, :, None], bgra):
        assert len(detector.detect(image)) >= 1
    with pytest.raises(fd.InputError, match="8-bit"):
        detector.detect(photo.astype(np.float32))


def test_faces_too_small_to_see_are_not_found_and_nothing_crashes(lfpw_faces):
    face = lfpw_faces[0]
    photo = dataset.read_image_bgr(face.image_path)
    scale = 12.0 / face.box_xywh[2]  # a 12 px face in a 1280 x 720 frame
    small = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    canvas = np.full((720, 1280, 3), 128, np.uint8)
    canvas[300:300 + small.shape[0], 600:600 + small.shape[1]] = small
    for name in ("blazeface", "blazeface-short", "blazeface-full", "haar"):
        assert fd.make_detector(name).detect(canvas) == []


def test_auto_range_finds_small_faces_the_short_range_model_misses(lfpw_faces):
    face = lfpw_faces[0]
    photo = dataset.read_image_bgr(face.image_path)
    scale = 90.0 / face.box_xywh[2]  # 7 % of the frame's width
    small = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    canvas = np.full((720, 1280, 3), 128, np.uint8)
    canvas[300:300 + small.shape[0], 600:600 + small.shape[1]] = small
    truth = (600 + face.box_xywh[0] * scale, 300 + face.box_xywh[1] * scale, 90.0, face.box_xywh[3] * scale)

    def hits(name):
        return [evaluate.box_iou(box, truth) >= 0.3 for box in fd.make_detector(name).detect_raw(canvas)]
    assert not any(hits("blazeface-short"))
    assert any(hits("blazeface-full")) and any(hits("blazeface"))


def test_haar_gives_detections_without_keypoints_or_roll(lfpw_faces):
    detections = fd.make_detector("haar").detect(dataset.read_image_bgr(lfpw_faces[0].image_path))
    assert detections and all(d.keypoints_px is None and d.roll_deg == 0.0 and d.score == 1.0
                              for d in detections)
    d = detections[0]
    assert d.training_box_xywh == pytest.approx(fd.HaarDetector.to_training_box(d.box_xywh))


def test_shipped_box_mapping_is_what_fitting_on_training_faces_gives(train_faces):
    fitted = evaluate.fit_detector_boxes(fd.make_detector("blazeface-short"), train_faces[::4])
    assert fitted["matched"] >= 0.95 * fitted["faces"]
    assert fitted["SCALE"] == pytest.approx(SHORT.scale, abs=0.03)
    assert fitted["SHIFT_X"] == pytest.approx(SHORT.shift_x, abs=0.02)
    assert fitted["SHIFT_Y"] == pytest.approx(SHORT.shift_y, abs=0.02)


# ---------------------------------------------------------------------------------------
# Roll: a rotated real photo gives an upright crop and points on the rotated annotation
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("angle_deg", [25.0, -25.0])
def test_roll_correction_on_a_rotated_real_photo(lfpw_faces, angle_deg):
    model = predict.LandmarkModel()
    detector = fd.make_detector("blazeface")
    corrected, uncorrected = [], []
    for face in lfpw_faces[:6]:
        photo, truth = bench_detector.rotate_photo(dataset.read_image_bgr(face.image_path), face.landmarks_px, angle_deg)
        detection = evaluate.match_detection(detector.detect(photo), dataset.replace(face, landmarks_px=truth))
        assert detection is not None, f"{face.image_path} rotated by {angle_deg}: face not found"
        # counter-clockwise turns raise the eye on the image's right: the roll goes negative
        assert detection.roll_deg == pytest.approx(geometry.roll_from_landmarks(truth), abs=6)
        assert np.sign(detection.roll_deg - geometry.roll_from_landmarks(face.landmarks_px)) == -np.sign(angle_deg)
        upright = model.predict_face(photo, detection.training_box_xywh, detection.roll_deg).landmarks_px
        tilted = model.predict_face(photo, detection.training_box_xywh, 0.0).landmarks_px
        corrected.append(evaluate.nme(upright[None], truth[None])[0])
        uncorrected.append(evaluate.nme(tilted[None], truth[None])[0])
    assert np.mean(corrected) < 0.06 and max(corrected) < 0.10
    assert np.mean(corrected) < np.mean(uncorrected)


# ---------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------

def test_missing_detector_file_names_it_and_how_to_get_it(tmp_path):
    with pytest.raises(fd.InputError) as error:
        fd.BlazeFaceDetector("short", models_dir=tmp_path)
    message = str(error.value)
    assert str(tmp_path / SHORT.file_name) in message and "not found" in message
    assert "pip download --no-deps mediapipe==0.10.14" in message and "DETECTORS.md" in message
    assert f"mediapipe/modules/face_detection/{SHORT.file_name}" in message


def test_corrupt_detector_file_names_it(tmp_path):
    (tmp_path / SHORT.file_name).write_bytes(b"\x00not a flatbuffer" * 100)
    with pytest.raises(fd.InputError, match=f"{SHORT.file_name}: not a TFLite model"):
        fd.BlazeFaceDetector("short", models_dir=tmp_path)
    (tmp_path / FULL.file_name).write_bytes(b"")
    with pytest.raises(fd.InputError, match=f"{FULL.file_name}: not a TFLite model"):
        fd.BlazeFaceDetector("full", models_dir=tmp_path)


def test_another_model_under_the_detector_name_is_refused(tmp_path):
    shutil.copy(REPO_DIR / "models" / "landmarks_int8.tflite", tmp_path / SHORT.file_name)
    with pytest.raises(fd.InputError, match=r"tensors .* expected \[1, 128, 128, 3\]"):
        fd.BlazeFaceDetector("short", models_dir=tmp_path)
    shutil.copy(REPO_DIR / "models" / SHORT.file_name, tmp_path / FULL.file_name)  # the wrong BlazeFace
    with pytest.raises(fd.InputError, match=FULL.file_name):
        fd.BlazeFaceDetector("full", models_dir=tmp_path)


def test_unknown_detector_and_range_are_named():
    with pytest.raises(fd.InputError, match="detector 'hog': unknown, choose from blazeface"):
        fd.make_detector("hog")
    with pytest.raises(fd.InputError, match="range 'medium': unknown"):
        fd.make_detector("blazeface", range="medium")


def test_predict_cli_names_a_broken_detector_file(pi_python, lfpw_face, tmp_path, monkeypatch):
    """predict.py exits 2 with the file's name when the detector cannot be loaded."""
    repo = tmp_path / "repo"
    shutil.copytree(REPO_DIR, repo, ignore=shutil.ignore_patterns(".venv*", ".git", "checkpoints", "runs",
                                                                  "__pycache__", "out"))
    (repo / "models" / SHORT.file_name).write_bytes(b"garbage")
    result = subprocess.run([pi_python, str(repo / "predict.py"), str(lfpw_face[0]), "--out", str(tmp_path / "o")],
                            cwd=repo, capture_output=True, text=True, timeout=120)
    assert result.returncode == predict.EXIT_BAD_INPUT
    assert f"{SHORT.file_name}: not a TFLite model" in result.stderr


@pytest.mark.parametrize("shape", [(2, 100_000, 3), (100_000, 2), (10, 10, 3)])
def test_haar_finds_nothing_in_a_photo_too_thin_for_a_face(shape):
    assert fd.HaarDetector().detect(np.full(shape, 128, np.uint8)) == []


@pytest.mark.parametrize("small_width", [0.06, 0.07, 0.1])
def test_auto_range_finds_small_faces_beside_a_large_one_and_no_second_box_on_it(lfpw_faces, small_width):
    """One face at 30 % of the frame's width and four smaller ones beside it: the short range
    model keeps the large one, the full range model adds the small ones (the short range
    model's answer alone, all large faces, would miss them)."""
    width, height = 1280, 720
    canvas = np.full((height, width, 3), 128, np.uint8)
    large_face = lfpw_faces[0]
    half, large_box = bench_detector.place_face(dataset.read_image_bgr(large_face.image_path),
                                                large_face.box_xywh, 0.3 * width, (width // 2, height))
    canvas[:, :width // 2] = half
    small_boxes = []
    for k, face in enumerate(lfpw_faces[1:5]):
        tile, box = bench_detector.place_face(dataset.read_image_bgr(face.image_path), face.box_xywh,
                                              small_width * width, (width // 4, height // 2))
        x0, y0 = width // 2 + (k % 2) * width // 4, (k // 2) * height // 2
        canvas[y0:y0 + height // 2, x0:x0 + width // 4] = tile
        small_boxes.append((box[0] + x0, box[1] + y0, box[2], box[3]))

    def found(name):
        boxes = fd.make_detector(name).detect_raw(canvas)
        return [sum(evaluate.box_iou(b, truth) >= 0.3 for b in boxes) for truth in [large_box, *small_boxes]]

    full, auto = found("blazeface-full"), found("blazeface")
    assert sum(full[1:]) >= 2  # the full range model sees small faces here
    assert auto[0] == 1 and auto[1:] == full[1:]  # the large face once, and every small one


def test_auto_range_adds_no_box_to_photos_of_one_large_face(lfpw_faces):
    for face in lfpw_faces:
        photo = dataset.read_image_bgr(face.image_path)
        short = fd.make_detector("blazeface-short").detect_raw(photo)
        if short and all(b[2] >= 0.2 * max(photo.shape[:2]) for b in short):
            added = fd.make_detector("blazeface").detect_raw(photo)[len(short):]
            assert all(b[2] < 0.2 * max(photo.shape[:2]) for b in added)
            assert not any(evaluate.box_iou(b, face.box_xywh) > 0 for b in added), face.image_path
