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
    for noise in ("absl::InitializeLog", "oneDNN custom operations", "Could not find cuda drivers",
                  "Statistics for quantized inputs", "tf.lite.Interpreter is deprecated"):
        assert noise not in result.stdout + result.stderr, noise


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
    assert result.returncode == 2 and "nothing.h5: no such checkpoint file" in result.stderr
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


# ---------------------------------------------------------------------------------------
# A failed export replaces nothing (issue 12)
# ---------------------------------------------------------------------------------------

def previous_models(out_dir):
    """An --out-dir holding the float32 model of an earlier export."""
    out_dir.mkdir()
    (out_dir / "landmarks_float32.tflite").write_bytes(b"the model predict.py uses today")
    (out_dir / "landmarks_float32.json").write_text('{"earlier": true}')
    return {p.name: p.read_bytes() for p in out_dir.iterdir()}


def export_float32(brief_checkpoint, subset_dir, out_dir):
    import export_tflite

    return export_tflite.main(["--model", str(brief_checkpoint), "--out-dir", str(out_dir),
                               "--data-dir", str(subset_dir), "--quantize", "float32",
                               "--parity-faces", "40"])


def test_a_wrong_conversion_is_caught_and_the_old_model_survives(brief_checkpoint, subset_dir, tmp_path,
                                                                 monkeypatch, capsys):
    """A conversion whose weights are off by 10 % (a deliberately wrong converter) fails the
    parity check, and the model already in --out-dir is still there, byte for byte."""
    import export_tflite

    real_convert = export_tflite.convert

    def wrong_convert(keras_model, fmt, calibration, int8_input="int8"):
        original = keras_model.get_weights()
        keras_model.set_weights([w * 1.1 if w.dtype.kind == "f" else w for w in original])
        try:
            return real_convert(keras_model, fmt, calibration, int8_input)
        finally:  # the Keras model itself, the reference of the check, stays as it was
            keras_model.set_weights(original)

    monkeypatch.setattr(export_tflite, "convert", wrong_convert)
    out_dir = tmp_path / "models"
    before = previous_models(out_dir)
    assert export_float32(brief_checkpoint, subset_dir, out_dir) == 1
    captured = capsys.readouterr()
    assert "FAILED: NME differs from Keras by more than the tolerance" in captured.out
    assert f"nothing in {out_dir} was replaced" in captured.err
    assert {p.name: p.read_bytes() for p in out_dir.iterdir()} == before


def test_a_conversion_better_than_its_keras_model_fails_too(brief_checkpoint, subset_dir, tmp_path,
                                                            monkeypatch, capsys):
    """The shipped model, far better than a 12-step checkpoint, passed off as its conversion:
    a mismatch the other way round, refused as well."""
    import export_tflite

    shipped = (REPO_DIR / "models" / "landmarks_float32.tflite").read_bytes()
    monkeypatch.setattr(export_tflite, "convert", lambda *args, **kwargs: shipped)
    out_dir = tmp_path / "models"
    before = previous_models(out_dir)
    assert export_float32(brief_checkpoint, subset_dir, out_dir) == 1
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("float32"))
    assert float(row.split()[3]) < -1.0  # drift, in NME points: far better than Keras
    assert row.endswith("FAILED: NME differs from Keras by more than the tolerance")
    assert {p.name: p.read_bytes() for p in out_dir.iterdir()} == before


def test_an_out_dir_that_is_a_file_fails_before_any_work(tmp_path, subset_dir):
    junk = tmp_path / "junk.h5"
    junk.write_text("not a model")  # never loaded: the --out-dir check comes first
    not_a_folder = tmp_path / "models"
    not_a_folder.write_text("a file")
    result = subprocess.run([sys.executable, "export_tflite.py", "--model", str(junk),
                             "--out-dir", str(not_a_folder), "--data-dir", str(subset_dir)],
                            cwd=REPO_DIR, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert f"--out-dir {not_a_folder}: is a file, not a folder" in result.stderr
    assert not_a_folder.read_text() == "a file"


def test_the_parity_check_is_two_sided():
    import export_tflite

    assert export_tflite.within_tolerance(0.0004, 0.0005)
    assert export_tflite.within_tolerance(-0.0004, 0.0005)
    assert not export_tflite.within_tolerance(0.0006, 0.0005)
    assert not export_tflite.within_tolerance(-0.0006, 0.0005)
    assert not export_tflite.within_tolerance(float("nan"), 0.0005)


# ---------------------------------------------------------------------------------------
# Two exports into one folder, a full disk, bad counts and names
# ---------------------------------------------------------------------------------------

def test_a_second_export_into_a_folder_in_use_is_refused_and_touches_nothing(tmp_path, subset_dir, capsys):
    import callbacks
    import export_tflite

    junk = tmp_path / "junk.h5"
    junk.write_text("not a model")  # never loaded: the folder is in use
    out_dir = tmp_path / "models"
    before = previous_models(out_dir)
    callbacks.pending_path(out_dir, "landmarks_int8.tflite").write_bytes(b"the first export's")
    before[".pending-landmarks_int8.tflite"] = b"the first export's"
    with callbacks.directory_lock(out_dir):  # the first export, still running
        code = export_tflite.main(["--model", str(junk), "--out-dir", str(out_dir),
                                   "--data-dir", str(subset_dir)])
    assert code == 2
    assert f"--out-dir {out_dir}: another run is writing there" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out_dir.iterdir()} == before


def test_an_export_whose_files_vanished_does_not_claim_them(tmp_path):
    import callbacks

    names = callbacks.write_pending(tmp_path, {"a.tflite": lambda p: open(p, "w").write("new a"),
                                               "a.json": lambda p: open(p, "w").write("new json")})
    (tmp_path / "a.json").write_text("old json")
    callbacks.pending_path(tmp_path, "a.tflite").unlink()  # removed by another process
    with pytest.raises(FileNotFoundError, match="the files written for a.tflite are gone"):
        callbacks.commit_pending(tmp_path, names)
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
    assert (tmp_path / "a.json").read_text() == "old json"


def test_a_full_disk_fails_the_export_cleanly_and_replaces_nothing(brief_checkpoint, subset_dir, tmp_path,
                                                                   monkeypatch, capsys):
    import errno

    import export_tflite

    monkeypatch.setattr(export_tflite, "convert", lambda *args, **kwargs: b"a flatbuffer")
    real_write_bytes = export_tflite.Path.write_bytes

    def full_disk(path, data):
        real_write_bytes(path, data[:3])  # the disk fills part way through
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    out_dir = tmp_path / "models"
    before = previous_models(out_dir)
    monkeypatch.setattr(export_tflite.Path, "write_bytes", full_disk)
    assert export_float32(brief_checkpoint, subset_dir, out_dir) == 2
    err = capsys.readouterr().err
    assert f"--out-dir {out_dir}: cannot write landmarks_float32.tflite (No space left on device)" in err
    assert "Traceback" not in err
    assert {p.name: p.read_bytes() for p in out_dir.iterdir()} == before


@pytest.mark.parametrize("flag, value, message", [
    ("--calibration-faces", "0", "--calibration-faces: wants a whole number of at least 1, got '0'"),
    ("--parity-faces", "0", "--parity-faces: wants a whole number of at least 1"),
    ("--parity-faces", "-5", "--parity-faces: wants a whole number of at least 1"),
    ("--name", "../x", "--name: wants a file-name prefix of letters, digits"),
    ("--name", ".hidden", "--name: wants a file-name prefix"),
])
def test_bad_counts_and_names_are_refused_as_flags(tmp_path, capsys, flag, value, message):
    import export_tflite

    with pytest.raises(SystemExit) as stop:
        export_tflite.main(["--model", str(tmp_path / "x.h5"), "--out-dir", str(tmp_path / "m"),
                            f"{flag}={value}"])
    assert stop.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("fmt", ["dynamic", "int8"])
def test_the_neighbour_regression_decoder_stays_exact_when_quantised(train_faces, fmt):
    """mobile-wide-nrm's decoding (expected offsets, neighbour averaging) is kept in float: a
    quantised conversion moves points by no more than the heatmaps' own quantisation does.
    (Its averaging once ran through a matrix of small weights, which dynamic-range
    quantisation rounded: +0.29 NME points.)"""
    import config
    import dataset
    import export_tflite
    import tensorflow as tf
    from model import build_network, init_neighbour_offsets

    settings = config.Config(arch="mobile-wide-nrm")
    crops, truth = dataset.LandmarkDataset(train_faces[:60], settings, training=False).arrays()
    network = build_network("mobile-wide-nrm", 128)
    init_neighbour_offsets(network, truth)
    kernel, bias = network.get_layer("offsets").get_weights()
    rng = np.random.default_rng(1)  # offsets that vary from cell to cell, as trained ones do
    network.get_layer("offsets").set_weights([rng.normal(0, 0.05, kernel.shape).astype(np.float32), bias])
    flatbuffer = export_tflite.convert(network, fmt, crops[:40], int8_input="float")
    interpreter = tf.lite.Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()
    got = []
    for crop in crops[40:]:
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], crop[None])
        interpreter.invoke()
        got.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0])
    want = network.predict(crops[40:], verbose=0)
    drift_px = np.abs(np.asarray(got) - want).mean() * 128
    assert drift_px < 0.3, f"{fmt}: points moved {drift_px:.3f} crop px on average"
