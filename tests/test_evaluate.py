"""The 300-W metrics against values computed by hand, and evaluate.py end to end."""

from __future__ import annotations

import json
from pathlib import Path
import subprocess
import sys
import warnings

import numpy as np
import pytest

import evaluate
import geometry
import predict
from conftest import REPO_DIR


def face_with_eyes(left_outer=(0.0, 0.0), right_outer=(10.0, 0.0)) -> np.ndarray:
    """A 68-point face whose outer eye corners (36, 45) are where asked, eyes 6 points each."""
    points = np.zeros((68, 2))
    points[36:42] = left_outer
    points[42:48] = right_outer
    points[36] = left_outer
    points[45] = right_outer
    return points


def test_inter_ocular_and_inter_pupil_distances():
    truth = face_with_eyes((0, 0), (30, 40))[None]
    assert evaluate.inter_ocular(truth) == pytest.approx([50.0])
    truth = np.zeros((1, 68, 2))
    truth[0, 36:42] = [[0, 0], [2, 0], [4, 0], [6, 0], [4, 2], [2, 2]]  # centre (3, 2/3)
    truth[0, 42:48] = [[20, 0], [22, 0], [24, 0], [26, 0], [24, 2], [22, 2]]  # centre (23, 2/3)
    assert evaluate.inter_pupil(truth) == pytest.approx([20.0])
    assert evaluate.inter_ocular(truth) == pytest.approx([26.0])  # points 36 (0,0) and 45 (26,0)


def test_nme_by_hand():
    truth = face_with_eyes((0, 0), (100, 0))[None]  # inter-ocular 100
    pred = truth.copy()
    pred[0, 0] += [3, 4]  # one point 5 px off
    pred[0, 1] += [6, 8]  # one point 10 px off
    # mean error (5 + 10) / 68, divided by 100
    assert evaluate.nme(pred, truth, "ion") == pytest.approx([15 / 68 / 100])
    errors = evaluate.point_errors(pred, truth)
    assert errors[0, 0] == pytest.approx(0.05) and errors[0, 1] == pytest.approx(0.10)
    assert np.count_nonzero(errors) == 2


def test_failure_rate_and_auc_by_hand():
    errors = np.array([0.01, 0.03, 0.09, 0.12])
    assert evaluate.failure_rate(errors, 0.08) == 0.5
    assert evaluate.failure_rate(errors, 0.10) == 0.25
    # AUC@0.08 = mean(max(0, 0.08 - e)) / 0.08 = (0.07 + 0.05 + 0 + 0) / 4 / 0.08
    assert evaluate.auc(errors, 0.08) == pytest.approx(0.375)
    assert evaluate.auc(np.zeros(5)) == pytest.approx(1.0)
    assert evaluate.auc(np.full(5, 0.2)) == 0.0


def test_auc_equals_the_integral_of_the_ced_curve():
    errors = np.random.default_rng(0).uniform(0, 0.12, size=500)
    xs, fractions = evaluate.ced(errors, 0.08, steps=8000)
    integral = np.trapezoid(fractions, xs) / 0.08
    assert evaluate.auc(errors, 0.08) == pytest.approx(integral, abs=1e-3)
    assert fractions[0] == 0.0 and fractions[-1] == pytest.approx(np.mean(errors <= 0.08))


def test_summary_regions_and_normalisers():
    truth = face_with_eyes((0, 0), (50, 0))[None]  # ion 50; pupils: (0,0) and (50,0) -> ipn 50
    pred = truth.copy()
    pred[0, 48:68] += [0, 5]  # the 20 mouth points 5 px off
    summary = evaluate.summarize(pred, truth)
    assert summary["count"] == 1 and summary["nme_ion_stderr"] is None
    assert summary["nme_ion"] == pytest.approx(20 * 5 / 68 / 50)
    assert summary["nme_ipn"] == pytest.approx(20 * 5 / 68 / 50)
    assert summary["regions_ion"]["mouth"] == pytest.approx(0.1)
    assert summary["regions_ion"]["jaw"] == 0.0 and summary["regions_ion"]["eyes"] == 0.0
    assert summary["fr_008"] == 0.0 and summary["auc_008"] == pytest.approx(1 - 100 / 68 / 50 / 0.08)
    # Two faces, per-face NME 0.02 and 0.04 (mouth 5 px and 10 px off): std 0.01414 / sqrt(2).
    pred2 = np.concatenate([pred, truth])
    pred2[1, 48:68] += [0, 10]
    two = evaluate.summarize(pred2, np.concatenate([truth, truth]))
    per_face = [20 * 5 / 68 / 50, 20 * 10 / 68 / 50]
    assert two["nme_ion_stderr"] == pytest.approx(np.std(per_face, ddof=1) / np.sqrt(2))


def run_evaluate(*args):
    return subprocess.run([sys.executable, "evaluate.py", *args], cwd=REPO_DIR,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def shipped_int8():
    path = REPO_DIR / "models" / "landmarks_int8.tflite"
    assert path.exists(), "the trained model must ship in models/"
    return path


def test_evaluate_cli_on_lfpw_test_writes_json_and_plot(subset_dir, shipped_int8, tmp_path):
    result = run_evaluate("--data-dir", str(subset_dir), "--model", str(shipped_int8),
                          "--json", str(tmp_path / "r.json"), "--plot", str(tmp_path / "ced.png"))
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    for key in ("nme_ion", "nme_ipn", "fr_008", "fr_010", "auc_008", "count"):
        assert key in report
    assert report["count"] == 224 and set(report["subsets"]) == {"common"}
    assert 0 < report["nme_ion"] < 0.15 and 0 <= report["fr_008"] <= 1
    assert report["nme_ipn"] > report["nme_ion"]  # pupils are closer than outer corners
    assert (tmp_path / "ced.png").read_bytes()[:4] == b"\x89PNG"
    assert "common" in result.stdout and "NME" in result.stdout


@pytest.mark.parametrize("detector, min_found", [("haar", 150), ("blazeface", 222)])
def test_evaluate_with_detector_boxes_reports_misses(subset_dir, shipped_int8, tmp_path, detector, min_found):
    result = run_evaluate("--data-dir", str(subset_dir), "--model", str(shipped_int8),
                          "--detector", detector, "--json", str(tmp_path / "r.json"))
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["boxes"] == detector and report["faces"] == 224
    assert report["count"] + report["missed"] == 224 and report["count"] >= min_found
    assert report["nme_ion"] < 0.045  # dataset boxes: 3.78 %
    assert "detector missed" in result.stdout


def test_evaluate_reads_an_xml_file_and_pts_folders(dlib_faces_dir, subset_dir, shipped_int8, tmp_path):
    result = run_evaluate("--data-dir", str(dlib_faces_dir / "testing_with_face_landmarks.xml"),
                          "--model", str(shipped_int8), "--json", str(tmp_path / "a.json"))
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "a.json").read_text())["count"] == 25
    faces = evaluate.evaluation_faces(subset_dir / "lfpw" / "testset")
    assert len(faces) == 224


def test_evaluate_errors_name_the_file(subset_dir, tmp_path):
    bogus = tmp_path / "model.onnx"
    bogus.write_text("nope")
    result = run_evaluate("--data-dir", str(subset_dir), "--model", str(bogus))
    assert result.returncode == 2 and "model.onnx" in result.stderr and "unknown model type" in result.stderr
    result = run_evaluate("--data-dir", str(tmp_path), "--model", str(bogus))
    assert result.returncode == 2 and str(tmp_path) in result.stderr


class ConstantRunner:
    """Answers every crop with the same face (crop coordinates in [-0.5, 0.5])."""

    framing = {"image_dim": 128, "crop_margin": 0.2, "crop_shift_y": 0.06}

    def __init__(self, points_norm):
        self.points = np.asarray(points_norm, dtype=np.float64)

    def predict_crops(self, crops):
        return np.repeat(self.points[None], len(crops), axis=0)


def mirror_norm(points_norm):

    mirrored = np.asarray(points_norm, dtype=np.float64).copy()
    mirrored[:, 0] = -mirrored[:, 0]
    return mirrored[geometry.FLIP_PERMUTATION_68]


def test_flip_averaging_averages_with_the_mirrored_prediction(train_faces):
    """predict_faces(flip_average=True) must map the mirrored crop's answer back: a
    symmetric face is unchanged, an asymmetric one becomes its mirror average."""
    faces = train_faces[:3]
    asymmetric = np.random.default_rng(1).uniform(-0.3, 0.3, size=(68, 2))
    symmetric = (asymmetric + mirror_norm(asymmetric)) / 2
    assert np.allclose(mirror_norm(symmetric), symmetric)

    plain_sym, _, _, _ = evaluate.predict_faces(ConstantRunner(symmetric), faces)
    flip_sym, _, _, _ = evaluate.predict_faces(ConstantRunner(symmetric), faces, flip_average=True)
    assert np.allclose(flip_sym, plain_sym, atol=1e-9)

    flip_asym, _, _, _ = evaluate.predict_faces(ConstantRunner(asymmetric), faces, flip_average=True)
    assert np.allclose(flip_asym, plain_sym, atol=1e-9)  # (p + mirror(p)) / 2 == symmetric
    plain_asym, _, _, _ = evaluate.predict_faces(ConstantRunner(asymmetric), faces)
    assert not np.allclose(plain_asym, plain_sym, atol=0.5)


def test_predictions_are_mapped_back_to_photo_pixels(train_faces):
    """A runner answering the true crop coordinates scores zero error in photo pixels."""

    face = train_faces[5]
    framing = ConstantRunner.framing
    _, matrix = geometry.frame_face(np.zeros((1, 1), np.uint8), face.box_xywh, 128,
                                    framing["crop_margin"], framing["crop_shift_y"])
    truth_norm = geometry.px_to_norm(geometry.transform_points(face.landmarks_px, matrix), 128)
    preds, truths, kept, missed = evaluate.predict_faces(ConstantRunner(truth_norm), [face])
    assert len(kept) == 1 and not missed
    assert np.abs(preds - truths).max() < 1e-3


def test_dlibs_archive_is_scored_on_the_standard_test_parts(tmp_path):
    """dlib's labels_ibug_300W_test.xml holds mostly training-part images, and its train file
    holds most standard test images plus mirrored copies: the standard split scores exactly
    the HELEN test, LFPW test and iBUG faces of both files, no mirrors, nothing else."""
    from test_dataset import box_xml, write_xml

    write_xml(tmp_path / "labels_ibug_300W_train.xml", {
        "afw/1.jpg": [box_xml()], "helen/trainset/2.jpg": [box_xml()],
        "helen/testset/3.jpg": [box_xml()], "helen/testset/3_mirror.jpg": [box_xml()],
        "lfpw/testset/4.png": [box_xml(), box_xml((50, 60, 80, 80))], "ibug/5.jpg": [box_xml()],
        "ibug/5_mirror.jpg": [box_xml()]})
    write_xml(tmp_path / "labels_ibug_300W_test.xml", {
        "lfpw/trainset/6.png": [box_xml()], "afw/7.jpg": [box_xml()], "ibug/8.jpg": [box_xml()],
        "lfpw/testset/4.png": [box_xml()]})  # listed by both files: scored once
    faces = evaluate.evaluation_faces(tmp_path, "test")
    scored = sorted((Path(f.image_path).relative_to(tmp_path).as_posix(), f.subset) for f in faces)
    assert scored == [("helen/testset/3.jpg", "common"), ("ibug/5.jpg", "challenging"),
                      ("ibug/8.jpg", "challenging"), ("lfpw/testset/4.png", "common"),
                      ("lfpw/testset/4.png", "common")]
    assert evaluate.scored_parts(faces) == {"helen/testset": 1, "ibug": 2, "lfpw/testset": 2}
    assert len(evaluate.evaluation_faces(tmp_path, "challenging")) == 2
    # dlib's own test file, as listed, only on request.
    as_listed = evaluate.evaluation_faces(tmp_path, "test", split_mode="xml")
    assert sorted(Path(f.image_path).name for f in as_listed) == ["4.png", "6.png", "7.jpg", "8.jpg"]


def test_evaluate_says_which_faces_it_scored(subset_dir, shipped_int8, tmp_path):
    result = run_evaluate("--data-dir", str(subset_dir), "--model", str(shipped_int8),
                          "--json", str(tmp_path / "r.json"))
    assert result.returncode == 0, result.stderr
    assert "scored: lfpw/testset 224" in result.stdout
    assert json.loads((tmp_path / "r.json").read_text())["scored"] == {"lfpw/testset": 224}


def test_rank_correlation_by_hand():
    a = np.array([1.0, 2.0, 3.0, 4.0])
    assert evaluate.rank_correlation(a, a * 10) == pytest.approx(1.0)
    assert evaluate.rank_correlation(a, -a) == pytest.approx(-1.0)
    # Spearman: 1 - 6 * sum(d^2) / (n (n^2 - 1)) with d = (0, 1, 1, 0): 1 - 12 / 60.
    assert evaluate.rank_correlation(a, np.array([1.0, 3.0, 2.0, 4.0])) == pytest.approx(0.8)


def test_a_detected_rolled_face_is_framed_exactly_as_predict_py_frames_it(train_faces, shipped_int8):
    """evaluate.py's figures with a detector are predict.py's: the same crop, turned upright
    by the detection's roll, with the framing's shift along the face's own vertical."""
    import dataset
    from face_detector import Detection
    from predict import LandmarkModel

    face = train_faces[0]
    box = face.box_xywh
    detection = Detection(box_xywh=box, score=0.9, keypoints_px=None, training_box_xywh=box, roll_deg=25.0)

    class OneFace:
        def detect(self, image):
            return [detection]

    model = LandmarkModel(shipped_int8)
    seen = []
    original = model.run_with_confidence
    model.run_with_confidence = lambda crop: seen.append(crop) or original(crop)
    model.predict_face(dataset.read_image_bgr(face.image_path), box, detection.roll_deg)
    crops, matrices, kept, missed = evaluate.frame_faces([face], model.metadata["framing"], OneFace())
    assert kept == [face] and not missed
    np.testing.assert_array_equal(crops[0], seen[0])


# ---------------------------------------------------------------------------------------
# Choosing between models: the validation faces, compared face by face
# ---------------------------------------------------------------------------------------


def test_paired_difference_by_hand():
    reference = np.array([0.03, 0.04, 0.05, 0.06])
    other = np.array([0.02, 0.04, 0.03, 0.05])  # differences -0.01, 0, -0.02, -0.01
    d = evaluate.paired_difference(reference, other)
    assert d["mean"] == pytest.approx(-0.01)
    assert d["stderr"] == pytest.approx(np.std([-0.01, 0, -0.02, -0.01], ddof=1) / 2)
    assert d["better_faces"] == 3 and d["worse_faces"] == 0
    # Every resampled mean lies between the smallest and largest difference; none is above 0.
    assert -0.02 - 1e-12 <= d["ci95"][0] <= d["ci95"][1] <= 1e-12
    # Only a draw of four zeros (1 in 256) reaches 0: the interval's upper end is below it.
    assert d["ci95"][1] < 0 and d["verdict"] == "better"
    assert evaluate.paired_difference(reference, reference - 0.001)["verdict"] == "better"
    assert evaluate.paired_difference(reference, reference + 0.001)["verdict"] == "worse"
    mixed = evaluate.paired_difference(reference, reference + np.array([0.01, -0.01, 0.01, -0.01]))
    assert mixed["mean"] == pytest.approx(0) and mixed["verdict"] == "within noise"
    assert mixed["ci95"][0] < 0 < mixed["ci95"][1]
    with pytest.raises(ValueError, match="same faces"):
        evaluate.paired_difference(reference, other[:3])


def test_the_validation_split_is_the_faces_train_py_holds_out(subset_dir):
    import train

    config = train.parse_args(["--data-dir", str(subset_dir), "--seed", "7", "--val-fraction", "0.08"])
    _, want = train.prepare_data(config)
    got = evaluate.evaluation_faces(subset_dir, "validation", "standard", seed=7, val_fraction=0.08)
    assert [(f.image_path, tuple(f.box_xywh)) for f in got] == \
        [(f.image_path, tuple(f.box_xywh)) for f in want.faces]
    assert {f.subset for f in got} == {"validation"}
    with pytest.raises(ValueError, match="--val-fraction must be between 0 and 1"):
        evaluate.evaluation_faces(subset_dir, "validation", val_fraction=0)


def test_compare_scores_models_on_the_same_validation_faces(subset_dir, shipped_int8, tmp_path):
    float32 = shipped_int8.with_name("landmarks_float32.tflite")
    result = run_evaluate("--data-dir", str(subset_dir), "--split", "validation", "--model", str(float32),
                          "--compare", str(shipped_int8), str(float32), "--json", str(tmp_path / "c.json"))
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "c.json").read_text())
    assert report["count"] == 101 and set(report["subsets"]) == {"validation"}
    int8, same = report["compared"]
    assert int8["model"] == str(shipped_int8)
    # The mean of the per-face differences is the difference of the means.
    assert int8["difference"]["mean"] == pytest.approx(int8["nme_ion"] - report["nme_ion"], abs=1e-9)
    assert int8["difference"]["better_faces"] + int8["difference"]["worse_faces"] > 90
    assert same["difference"] == {"mean": 0.0, "stderr": 0.0, "ci95": [0.0, 0.0], "better_faces": 0,
                                  "worse_faces": 0, "verdict": "within noise"}
    assert "within noise" in result.stdout and "(reference)" in result.stdout


def test_compare_with_detector_boxes_pairs_the_faces_the_detector_found(subset_dir, shipped_int8, tmp_path):
    """A detector's boxes do not depend on the model, so both models score the same faces,
    and the ones it missed are left out of both."""
    float32 = shipped_int8.with_name("landmarks_float32.tflite")
    result = run_evaluate("--data-dir", str(subset_dir), "--split", "validation", "--model", str(shipped_int8),
                          "--detector", "haar", "--compare", str(float32), "--json", str(tmp_path / "c.json"))
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "c.json").read_text())
    assert report["missed"] > 0 and report["count"] + report["missed"] == 101
    (other,) = report["compared"]
    d = other["difference"]
    assert d["mean"] == pytest.approx(other["nme_ion"] - report["nme_ion"], abs=1e-9)
    assert d["better_faces"] + d["worse_faces"] <= report["count"]


def test_refine_frames_a_second_pass_by_the_first_points_alike_in_predict_and_evaluate(train_faces, shipped_int8):
    """--refine: the second crop is framed by the box of the first pass's points at the
    detection's roll, the answer is the mean of the two passes, and evaluate.py scores
    what predict.py answers. (The float32 model: the two programs' first passes differ by
    1e-5 px of rounding, which moves the second box as much and can turn a few of its crop's
    pixels a grey level, and the int8 model answers such a change with up to ~0.3 px.)"""
    shipped_float32 = shipped_int8.with_name("landmarks_float32.tflite")
    import dataset
    from face_detector import Detection
    from predict import LandmarkModel

    face = train_faces[3]
    box = face.box_xywh
    detection = Detection(box_xywh=box, score=0.9, keypoints_px=None, training_box_xywh=box, roll_deg=-12.0)

    class OneFace:
        def detect(self, image):
            return [detection]

    image = dataset.read_image_bgr(face.image_path)
    plain = LandmarkModel(shipped_float32)
    first = plain.predict_face(image, box, detection.roll_deg)
    second_box = geometry.box_from_landmarks_upright(first.landmarks_px, detection.roll_deg)
    second = plain.predict_face(image, second_box, detection.roll_deg)
    assert np.abs(np.asarray(second_box) - np.asarray(box)).max() > 1.0  # a different framing

    refined = LandmarkModel(shipped_float32, refine=True).predict_face(image, box, detection.roll_deg)
    np.testing.assert_allclose(refined.landmarks_px, (first.landmarks_px + second.landmarks_px) / 2, atol=1e-9)
    np.testing.assert_allclose(refined.landmark_confidence,
                               (first.landmark_confidence + second.landmark_confidence) / 2, atol=1e-9)
    assert refined.box_xywh == tuple(float(v) for v in box)

    runner = evaluate.load_landmark_model(shipped_float32)
    preds, _, kept, _ = evaluate.predict_faces(runner, [face], OneFace(), refine=True)
    assert kept == [face]
    np.testing.assert_allclose(preds[0], refined.landmarks_px, atol=1e-3)


# ---------------------------------------------------------------------------------------
# Outputs are checked before scoring and never written onto an input
# ---------------------------------------------------------------------------------------

def copied_int8(shipped_int8, tmp_path):
    model = tmp_path / "m" / "landmarks_int8.tflite"
    model.parent.mkdir()
    model.write_bytes(shipped_int8.read_bytes())
    model.with_suffix(".json").write_text(shipped_int8.with_suffix(".json").read_text())
    return model


@pytest.mark.parametrize("flag", ["--json", "--plot"])
def test_outputs_onto_an_input_are_refused_before_scoring(subset_dir, shipped_int8, tmp_path, capsys, flag):
    model = copied_int8(shipped_int8, tmp_path)
    metadata = model.with_suffix(".json")
    before = {p: p.read_bytes() for p in (model, metadata)}
    target = metadata if flag == "--json" else tmp_path / "m" / "link.png"
    if flag == "--plot":
        target.symlink_to(model)  # a link to the model itself
    code = evaluate.main(["--data-dir", str(subset_dir), "--model", str(model), flag, str(target)])
    assert code == 2
    assert f"{flag} {target}: is one of the inputs" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in before} == before
    assert predict.LandmarkModel(model).image_dim == 128  # still loads


@pytest.mark.parametrize("args, message", [
    (["--json", "/missing/dir/x.json"], "--json /missing/dir/x.json: the folder /missing/dir does not exist"),
    (["--plot", "x.tflite"], "--plot x.tflite: write the plot to a .png, .pdf, .svg file"),
    (["--split", "bogus"], "argument --split: invalid choice: 'bogus'"),
])
def test_bad_outputs_and_splits_fail_before_scoring_with_one_line(subset_dir, shipped_int8, capsys,
                                                                  monkeypatch, args, message):
    scored = []
    monkeypatch.setattr(evaluate, "evaluate", lambda *a, **k: scored.append(1))
    try:
        code = evaluate.main(["--data-dir", str(subset_dir / "labels_ibug_300W_test.xml"),
                              "--model", str(shipped_int8), *args])
    except SystemExit as stop:
        code = stop.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not scored


def test_weights_of_another_architecture_are_named_in_one_line(tmp_path):
    keras_dir = REPO_DIR / "models" / "keras"
    for name in ("best_model.weights.h5", "framing.json"):
        (tmp_path / name).write_bytes((keras_dir / name).read_bytes())
    config = json.loads((keras_dir / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "arch": "xception"}))
    with pytest.raises(ValueError) as refused, warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning per layer either
        evaluate.load_landmark_model(tmp_path / "best_model.weights.h5")
    message = str(refused.value)
    assert message == (f"{tmp_path / 'best_model.weights.h5'}: its weights do not fit the 'xception' network "
                       f"that {tmp_path / 'config.json'} names (weights of another --arch?)")


def test_json_onto_the_annotation_file_of_the_data_folder_is_refused(subset_dir, shipped_int8, tmp_path, capsys):
    labels = tmp_path / "labels_ibug_300W_test.xml"  # a copy: the shared data is never written to
    labels.write_bytes((subset_dir / "labels_ibug_300W_test.xml").read_bytes())
    before = labels.read_bytes()
    code = evaluate.main(["--data-dir", str(tmp_path), "--model", str(shipped_int8), "--json", str(labels)])
    assert code == 2 and f"--json {labels}: is one of the inputs" in capsys.readouterr().err
    assert labels.read_bytes() == before


def test_scoring_a_keras_model_prints_the_figures_and_no_start_up_noise(subset_dir):
    from test_train import CONSOLE_NOISE, user_environment

    result = subprocess.run(
        [sys.executable, "evaluate.py", "--data-dir", str(subset_dir), "--split", "validation",
         "--model", str(REPO_DIR / "models" / "keras" / "best_model.weights.h5")],
        cwd=REPO_DIR, env=user_environment(), capture_output=True, text=True, timeout=600)
    console = result.stdout + result.stderr
    assert result.returncode == 0, console[-3000:]
    for noise in CONSOLE_NOISE:
        assert noise not in console, f"{noise!r} in:\n{console}"
    assert "validation     101" in console
