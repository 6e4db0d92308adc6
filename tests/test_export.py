"""export_tflite.py on a briefly trained model: every format converts, runs in the TFLite
runtime, and stays within its NME tolerance of the Keras model."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO_DIR


@pytest.fixture(scope="module")
def brief_checkpoint(subset_dir, tmp_path_factory):
    """A mobile model after a few real training steps on 300-W faces."""
    folder = tmp_path_factory.mktemp("brief")
    result = subprocess.run(
        [sys.executable, "train.py", "--data-dir", str(subset_dir), "--arch", "mobile",
         "--loss", "wing", "--epochs", "2", "--steps-per-epoch", "6", "--batch-size", "16",
         "--val-fraction", "0.03", "--checkpoint-dir", str(folder)],
        cwd=REPO_DIR, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return folder / "best_model_full.h5"


@pytest.fixture(scope="module")
def exported(brief_checkpoint, subset_dir, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("models")
    result = subprocess.run(
        [sys.executable, "export_tflite.py", "--model", str(brief_checkpoint), "--out-dir", str(out_dir),
         "--data-dir", str(subset_dir), "--calibration-faces", "60", "--parity-faces", "40"],
        cwd=REPO_DIR, capture_output=True, text=True, timeout=900)
    return result, out_dir


def test_every_format_converts_within_tolerance(exported):
    result, out_dir = exported
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    table = {line.split()[0]: line.split() for line in result.stdout.splitlines()
             if line.split() and line.split()[0] in ("float32", "float16", "dynamic", "int8")}
    assert set(table) == {"float32", "float16", "dynamic", "int8"}
    for fmt, row in table.items():
        assert "FAILED" not in row
        assert (out_dir / f"landmarks_{fmt}.tflite").stat().st_size > 100_000
    sizes = {fmt: (out_dir / f"landmarks_{fmt}.tflite").stat().st_size for fmt in table}
    assert sizes["int8"] < sizes["float16"] < sizes["float32"]


def test_metadata_describes_the_framing(exported, brief_checkpoint):
    _, out_dir = exported
    meta = json.loads((out_dir / "landmarks_int8.json").read_text())
    framing = json.loads((brief_checkpoint.parent / "framing.json").read_text())
    assert meta["framing"] == framing and meta["input_type"] == "int8" and meta["output_type"] == "float32"


def test_tflite_matches_keras_on_real_crops(exported, brief_checkpoint, subset_dir):
    import evaluate

    _, out_dir = exported
    faces = evaluate.evaluation_faces(subset_dir)[:12]
    keras_preds, truths, _, _ = evaluate.predict_faces(evaluate.load_landmark_model(brief_checkpoint), faces)
    for fmt, max_px in (("float32", 0.01), ("int8", 3.0)):
        lite_preds, _, _, _ = evaluate.predict_faces(
            evaluate.load_landmark_model(out_dir / f"landmarks_{fmt}.tflite"), faces)
        assert np.abs(lite_preds - keras_preds).mean() < max_px / 3, fmt
        assert np.abs(lite_preds - keras_preds).max() < max_px * 4, fmt


def test_export_of_a_missing_or_wrong_checkpoint_fails_clearly(tmp_path, subset_dir):
    missing = tmp_path / "nothing.h5"
    result = subprocess.run([sys.executable, "export_tflite.py", "--model", str(missing),
                             "--out-dir", str(tmp_path), "--data-dir", str(subset_dir)],
                            cwd=REPO_DIR, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "nothing.h5" in result.stderr
    not_h5 = tmp_path / "junk.h5"
    not_h5.write_text("not a model")
    (tmp_path / "framing.json").write_text(json.dumps({"image_dim": 128, "crop_margin": 0.2, "crop_shift_y": 0.06}))
    result = subprocess.run([sys.executable, "export_tflite.py", "--model", str(not_h5),
                             "--out-dir", str(tmp_path), "--data-dir", str(subset_dir)],
                            cwd=REPO_DIR, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "junk.h5" in result.stderr


def test_the_confidence_output_is_exported_and_checked(exported):
    """Each format carries the per-point confidence, and the parity check compares it."""
    import predict

    result, out_dir = exported
    header = next(line.split() for line in result.stdout.splitlines() if line.startswith("format"))
    assert "conf" in header
    for fmt in ("float32", "float16", "dynamic", "int8"):
        row = next(line.split() for line in result.stdout.splitlines() if line.startswith(fmt))
        conf_drift, conf_tolerance = float(row[5]), float(row[6])
        assert 0 <= conf_drift <= conf_tolerance, row
        meta = json.loads((out_dir / f"landmarks_{fmt}.json").read_text())
        assert len(meta["reference_spread"]) == 68
        assert predict.LandmarkModel(out_dir / f"landmarks_{fmt}.tflite").has_confidence
