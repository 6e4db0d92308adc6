"""train.py end to end on real faces: what a run leaves behind, that the saved models are
the trained ones, that the input pipelines are reproducible, and that a killed run resumes.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

import callbacks
import dataset
from config import Config, framing_of
from conftest import REPO_DIR, TEST_XML

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def read_history(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def load_full(path: Path):
    import losses

    return keras.saving.load_model(str(path), custom_objects=losses.CUSTOM_OBJECTS)


def predict(model, images: np.ndarray) -> np.ndarray:
    return np.asarray(model(images, training=False))


@pytest.fixture(scope="module")
def face_batch(subset_dir):
    """Eight evaluation crops of real test faces: the input the saved models are judged on."""
    faces = dataset.parse_dlib_xml(subset_dir / TEST_XML)[:8]
    data = dataset.LandmarkDataset(faces, Config(), training=False)
    return np.stack([data.sample(i)[0] for i in range(len(data))])


# ---------------------------------------------------------------------------------------
# (a) A short real run and what it leaves behind
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def short_run(subset_dir, face_batch, tmp_path_factory):
    """train.train() for 2 epochs x 3 steps on the real training faces, recording what the
    model predicted on ``face_batch`` at the moment each full model was saved."""
    import train

    checkpoint_dir = tmp_path_factory.mktemp("short_run")
    config = train.parse_args([
        "--data-dir", str(subset_dir), "--arch", "mobile", "--epochs", "2",
        "--steps-per-epoch", "3", "--batch-size", "8", "--val-fraction", "0.02",
        "--checkpoint-dir", str(checkpoint_dir), "--no-download"])
    predicted_at_save = {}
    original_save = callbacks.save_full_model

    def recording_save(model, path):
        # The best pair is first written under .pending-<name> (callbacks.save_together).
        predicted_at_save[Path(path).name.removeprefix(".pending-")] = predict(model, face_batch)
        original_save(model, path)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(callbacks, "save_full_model", recording_save)
        summary = train.train(config)
    return config, checkpoint_dir, summary, predicted_at_save


@pytest.mark.slow
def test_short_run_writes_every_artefact(short_run):
    config, checkpoint_dir, summary, _ = short_run
    for name in ("best_model.weights.h5", "best_model_full.h5", "final_model.h5", "history.csv",
                 "history.png", "config.json", "framing.json", "best_state.json"):
        assert (checkpoint_dir / name).is_file(), f"{name} missing"
        assert (checkpoint_dir / name).stat().st_size > 0
    assert (checkpoint_dir / "history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (checkpoint_dir / "backup").exists()  # a finished run leaves no backup
    assert not list(checkpoint_dir.glob(".tmp-*"))  # nor half-written files
    assert summary["epochs_run"] == 2
    assert summary["train_faces"] + summary["val_faces"] == 2012
    assert 0 < summary["val_faces"] < 60 and summary["skipped"] == []


@pytest.mark.slow
def test_short_run_history_has_one_row_per_epoch(short_run):
    _, checkpoint_dir, summary, _ = short_run
    rows = read_history(checkpoint_dir / "history.csv")
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    for row in rows:
        for key in ("loss", "nme", "val_loss", "val_nme"):
            assert np.isfinite(float(row[key])), key
    best = json.loads((checkpoint_dir / "best_state.json").read_text())
    assert best["best"] == pytest.approx(min(float(r["val_nme"]) for r in rows), rel=1e-5)
    assert best["best"] == pytest.approx(summary["best_val_nme"])


@pytest.mark.slow
def test_short_run_records_its_config_and_framing(short_run):
    config, checkpoint_dir, _, _ = short_run
    assert Config.from_json_file(checkpoint_dir / "config.json") == config
    assert json.loads((checkpoint_dir / "framing.json").read_text()) == framing_of(config)


@pytest.mark.slow
def test_saved_full_models_reload_and_predict_as_the_model_that_saved_them(short_run, face_batch):
    _, checkpoint_dir, _, predicted_at_save = short_run
    for name in (callbacks.FINAL_FULL, callbacks.BEST_FULL):
        reloaded = load_full(checkpoint_dir / name)
        np.testing.assert_allclose(predict(reloaded, face_batch), predicted_at_save[name],
                                   atol=1e-6, err_msg=name)


@pytest.mark.slow
def test_best_weights_file_matches_the_best_full_model(short_run, face_batch):
    from model import build_network

    config, checkpoint_dir, _, predicted_at_save = short_run
    network = build_network(config.arch, config.image_dim)
    network.load_weights(str(checkpoint_dir / callbacks.BEST_WEIGHTS))
    np.testing.assert_allclose(predict(network, face_batch), predicted_at_save[callbacks.BEST_FULL],
                               atol=1e-6)


# ---------------------------------------------------------------------------------------
# (b) Reproducible input pipelines
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def some_faces(subset_dir):
    return dataset.parse_dlib_xml(subset_dir / TEST_XML)[:36]


def as_arrays(tf_dataset, batches=None):
    stream = tf_dataset.take(batches) if batches else tf_dataset
    pairs = [(np.asarray(x), np.asarray(y)) for x, y in stream]
    return np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])


def test_validation_pipeline_is_the_same_every_pass_and_every_build(some_faces):
    config = Config(batch_size=8)
    data = dataset.LandmarkDataset(some_faces, config, training=False)
    first, second = as_arrays(data.tf_dataset()), as_arrays(data.tf_dataset())
    rebuilt = as_arrays(dataset.LandmarkDataset(some_faces, config, training=False).tf_dataset())
    for run in (second, rebuilt):
        np.testing.assert_array_equal(first[0], run[0])
        np.testing.assert_array_equal(first[1], run[1])
    images, landmarks = first
    assert images.shape == (36, 128, 128, 1) and images.dtype == np.float32
    assert landmarks.shape == (36, 136) and landmarks.dtype == np.float32
    # In order: face i is sample i.
    np.testing.assert_array_equal(landmarks[5], data.sample(5)[1])
    assert images.min() >= -1 and images.max() <= 1


def test_training_pipeline_is_reproducible_for_a_seed_and_fresh_each_epoch(some_faces):
    config = Config(batch_size=6, seed=3)
    per_epoch = len(some_faces) // config.batch_size
    build = lambda seed: dataset.LandmarkDataset(some_faces, config, training=True, seed=seed)  # noqa: E731
    run = as_arrays(build(3).tf_dataset(repeat=True), 2 * per_epoch)
    again = as_arrays(build(3).tf_dataset(repeat=True), 2 * per_epoch)
    np.testing.assert_array_equal(run[0], again[0])
    np.testing.assert_array_equal(run[1], again[1])
    epoch0, epoch1 = run[1][:36], run[1][36:]
    assert not np.allclose(epoch0, epoch1)
    # A resumed run continues the sequence of epochs instead of replaying epoch 0.
    resumed = as_arrays(build(3).tf_dataset(repeat=True, first_epoch=1), per_epoch)
    np.testing.assert_array_equal(resumed[1], epoch1)
    other_seed = as_arrays(build(4).tf_dataset(repeat=True), per_epoch)
    assert not np.allclose(other_seed[1], epoch0)


def test_each_training_epoch_visits_every_face_once(some_faces):
    """With augmentation switched off, an epoch is a permutation of the evaluation samples."""
    still = Config(batch_size=6, rotation_deg=0, box_scale_jitter=0, box_shift_jitter=0,
                   flip_prob=0, brightness=0, contrast=0, saturation=0)
    evaluation = as_arrays(dataset.LandmarkDataset(some_faces, still, training=False).tf_dataset())[1]
    training = as_arrays(dataset.LandmarkDataset(some_faces, still, training=True)
                         .tf_dataset(repeat=True), 2 * 6)[1]
    key = lambda rows: sorted(map(tuple, np.round(rows, 5)))  # noqa: E731
    for epoch in (training[:36], training[36:]):
        assert key(epoch) == key(evaluation)
    assert not np.array_equal(training[:36], evaluation)  # shuffled


# ---------------------------------------------------------------------------------------
# (c) Interrupted runs resume
# ---------------------------------------------------------------------------------------


class Interrupt(keras.callbacks.Callback):
    """Stops fit() like a kill would, at (epoch, batch) or at the start of an epoch."""

    def __init__(self, epoch, batch=None):
        super().__init__()
        self.epoch, self.batch, self.current = epoch, batch, None

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch
        if epoch == self.epoch and self.batch is None:
            raise KeyboardInterrupt

    def on_train_batch_end(self, batch, logs=None):
        if self.current == self.epoch and batch == self.batch:
            raise KeyboardInterrupt


def tiny_fit(backup_dir, epochs, save_freq, stop=None):
    """Fits a one-layer model, 10 steps an epoch, with train.py's backup callback; returns
    the epochs run, or the epoch recorded in the backup when ``stop`` interrupts it."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    backup = callbacks.BackupAndRestore(str(backup_dir), save_freq=save_freq, double_checkpoint=True)
    x, y = np.ones((40, 4), np.float32), np.zeros((40, 1), np.float32)
    try:
        history = model.fit(x, y, batch_size=4, epochs=epochs, verbose=0,
                            callbacks=[backup] + ([stop] if stop else []))
    except KeyboardInterrupt:
        return json.loads((Path(backup_dir) / "training_metadata.json").read_text())["epoch"]
    return len(history.history["loss"])


@pytest.mark.parametrize("save_freq", [3, 10, 25])
def test_backup_records_the_epoch_a_restart_must_resume_at(tmp_path, save_freq):
    """The backup says which epoch a restarted run begins with: the interrupted one, never
    one already finished (it would be trained, and logged, twice) nor epoch 0 again."""
    backup = tmp_path / "backup"
    # Killed in the middle of epoch 2 (epochs 0 and 1 done): resume at 2.
    assert tiny_fit(backup, 5, save_freq, Interrupt(2, 5)) == 2
    # Killed again inside the resumed epoch 2, even before its first periodic backup.
    assert tiny_fit(backup, 5, save_freq, Interrupt(2, 1)) == 2
    # Killed between epochs 2 and 3: epoch 2 is done, resume at 3.
    assert tiny_fit(backup, 5, save_freq, Interrupt(3)) == 3
    # The rest of the run: epochs 3 and 4 only; the finished run removes its backup.
    assert tiny_fit(backup, 5, save_freq) == 2
    assert not backup.exists()


def write_labels_xml(faces, path: Path) -> Path:
    """A dlib XML listing real faces by absolute path (the photos stay where they are)."""
    images = {}
    for face in faces:
        images.setdefault(face.image_path, []).append(face)
    body = []
    for image_path, image_faces in images.items():
        body.append(f"  <image file='{image_path}'>")
        for face in image_faces:
            left, top, width, height = (int(v) for v in face.box_xywh)
            body.append(f"    <box top='{top}' left='{left}' width='{width}' height='{height}'>")
            body += [f"      <part name='{i:02d}' x='{x:g}' y='{y:g}'/>"
                     for i, (x, y) in enumerate(face.landmarks_px)]
            body.append("    </box>")
        body.append("  </image>")
    path.write_text("<dataset>\n<images>\n" + "\n".join(body) + "\n</images>\n</dataset>\n")
    return path


def train_command(data_dir, checkpoint_dir):
    return [sys.executable, "train.py", "--data-dir", str(data_dir), "--split", "xml",
            "--arch", "mobile", "--epochs", "3", "--steps-per-epoch", "60", "--batch-size", "4",
            "--val-fraction", "0.1", "--lr-schedule", "cosine", "--warmup-epochs", "1",
            "--checkpoint-dir", str(checkpoint_dir), "--no-download"]


def backup_epoch(backup_dir: Path):
    try:
        return json.loads((backup_dir / "training_metadata.json").read_text())["epoch"]
    except (OSError, ValueError, KeyError):  # not there yet, or being written
        return None


@pytest.mark.slow
def test_killed_run_keeps_its_best_checkpoint_and_resumes_to_the_end(train_faces, face_batch, tmp_path):
    # 300 real faces, so that each of the two processes starts in seconds.
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    write_labels_xml(train_faces[:300], data_dir / "labels_ibug_300W_train.xml")
    checkpoint_dir = tmp_path / "run"
    command = train_command(data_dir, checkpoint_dir)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    first_log = tmp_path / "first.log"
    with open(first_log, "w") as log:
        process = subprocess.Popen(command, cwd=REPO_DIR, env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        # Wait for epoch 1 to be under way: epoch 0 finished, best model saved, backed up.
        while not ((checkpoint_dir / callbacks.BEST_FULL).exists()
                   and (backup_epoch(checkpoint_dir / "backup") or 0) >= 1):
            assert process.poll() is None, f"train.py ended early:\n{first_log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no backup in time:\n{first_log.read_text()[-3000:]}"
            time.sleep(0.2)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (checkpoint_dir / callbacks.FINAL_FULL).exists()

    # What a killed run leaves is usable as it is.
    from model import build_network

    best_full = predict(load_full(checkpoint_dir / callbacks.BEST_FULL), face_batch)
    network = build_network("mobile", 128)
    network.load_weights(str(checkpoint_dir / callbacks.BEST_WEIGHTS))
    np.testing.assert_allclose(predict(network, face_batch), best_full, atol=1e-6)
    assert [int(r["epoch"]) for r in read_history(checkpoint_dir / "history.csv")] == [0]

    # The same command again picks up from the backup and finishes the run.
    second = subprocess.run(command, cwd=REPO_DIR, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, timeout=400)
    assert second.returncode == 0, second.stdout[-3000:]
    assert "resuming" in second.stdout, second.stdout[-3000:]
    assert (checkpoint_dir / callbacks.FINAL_FULL).is_file()
    load_full(checkpoint_dir / callbacks.FINAL_FULL)
    rows = read_history(checkpoint_dir / "history.csv")
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert not (checkpoint_dir / "backup").exists()
    # The schedule follows the optimizer's step count, which the backup restores: warmed up
    # to the full rate after epoch 0, and down to 1 % of it by the end. (A count restarted
    # at 0 would end halfway down the cosine.)
    assert float(rows[0]["learning_rate"]) == pytest.approx(0.00075, rel=1e-5)
    assert float(rows[2]["learning_rate"]) == pytest.approx(0.0000075, rel=1e-5)


# ---------------------------------------------------------------------------------------
# Fine-tuning from a checkpoint (--init-weights)
# ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_init_weights_starts_from_the_checkpoint(short_run, subset_dir, tmp_path):
    """With lr 0 nothing trainable moves: the model must hold exactly the checkpoint's weights."""
    import train
    from model import build_network

    _, checkpoint_dir, _, _ = short_run
    source = checkpoint_dir / "best_model.weights.h5"
    config = train.parse_args([
        "--data-dir", str(subset_dir), "--arch", "mobile", "--epochs", "1", "--steps-per-epoch", "1",
        "--batch-size", "4", "--val-fraction", "0.02", "--lr", "0", "--init-weights", str(source),
        "--checkpoint-dir", str(tmp_path / "tuned"), "--no-download"])
    tuned = train.train(config)["model"]
    reference = build_network("mobile", 128)
    reference.load_weights(str(source))
    for got, want in zip(tuned.trainable_weights, reference.trainable_weights):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=got.path)
    fresh = build_network("mobile", 128)
    assert not all(np.array_equal(np.asarray(a), np.asarray(b))
                   for a, b in zip(fresh.trainable_weights, reference.trainable_weights))


def test_init_weights_of_another_architecture_is_refused(short_run, subset_dir, tmp_path, caplog):
    import train

    _, checkpoint_dir, _, _ = short_run
    code = train.main([
        "--data-dir", str(subset_dir), "--arch", "xception", "--epochs", "1", "--steps-per-epoch", "1",
        "--val-fraction", "0.02", "--init-weights", str(checkpoint_dir / "best_model.weights.h5"),
        "--checkpoint-dir", str(tmp_path / "bad"), "--no-download"])
    assert code == 2
    assert "best_model.weights.h5: cannot load its weights into --arch xception" in caplog.text


@pytest.fixture(scope="module")
def wide_checkpoint(tmp_path_factory):
    """A mobile-wide weights file unlike any fresh initialisation."""
    from model import build_network

    keras.utils.set_random_seed(5)
    source = build_network("mobile-wide", 128)
    rng = np.random.default_rng(0)
    for weight in source.weights:
        weight.assign(np.asarray(weight) + rng.normal(0, 0.01, weight.shape).astype(np.float32) + 0.01)
    path = tmp_path_factory.mktemp("wide") / "wide.weights.h5"
    source.save_weights(str(path))
    return source, path


def start_variant(arch, checkpoint, subset_dir, tmp_path):
    """train.py --arch ARCH --init-weights CHECKPOINT, one step at learning rate 0."""
    import train

    config = train.parse_args([
        "--data-dir", str(subset_dir), "--arch", arch, "--epochs", "1",
        "--steps-per-epoch", "1", "--batch-size", "4", "--val-fraction", "0.02", "--lr", "0",
        "--init-weights", str(checkpoint), "--checkpoint-dir", str(tmp_path / arch), "--no-download"])
    return train.train(config)["model"]


@pytest.mark.parametrize("arch, added", [("mobile-wide-nrm", {"offsets"}),
                                         ("mobile-wide-s4", {"fpn4_conv", "fpn4_bn"})])
def test_a_mobile_wide_checkpoint_starts_every_layer_its_variant_shares(wide_checkpoint, subset_dir, tmp_path,
                                                                          arch, added):
    """Copied by name, not by position: the stride-4 variant adds layers in the middle."""
    source, path = wide_checkpoint
    tuned = start_variant(arch, path, subset_dir, tmp_path)
    shared = {layer.name for layer in source.layers if layer.weights}
    assert {layer.name for layer in tuned.layers if layer.weights} - shared == added
    for name in shared:  # lr 0: only batch-norm statistics move, in the one step
        for got, want in zip(tuned.get_layer(name).trainable_weights, source.get_layer(name).trainable_weights):
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=got.path)
    if arch == "mobile-wide-s4":  # the new level starts silent: the stride-8 features, upsampled
        gamma = tuned.get_layer("fpn4_bn").get_weights()[0]
        assert not gamma.any()
        assert np.asarray(tuned.get_layer("fpn4_conv").kernel).std() > 0.01  # its own initialisation


def test_the_neighbour_offsets_start_at_their_mean_over_the_training_faces(wide_checkpoint, subset_dir,
                                                                             tmp_path):
    """mobile-wide-nrm's new head starts with zero kernels and, as biases, each neighbour's
    mean offset (in heatmap cells) over the run's own training faces."""
    import dataset
    import geometry
    from model import contour_neighbours

    tuned = start_variant("mobile-wide-nrm", wide_checkpoint[1], subset_dir, tmp_path)
    kernel, bias = tuned.get_layer("offsets").get_weights()
    assert not kernel.any()
    faces, _ = dataset.split_by_image(dataset.load_faces(subset_dir, "train"), 0.02, 42)
    sides = np.array([geometry.face_square(f.box_xywh, 0.2, 0.06)[1] for f in faces])
    points = np.stack([f.landmarks_px for f in faces]) / sides[:, None, None]
    table = contour_neighbours()
    expected = ((points[:, table] - points[:, :, None]).mean(axis=0) * 16)  # [68, 4, 2] cells
    got = bias.reshape(68, 5, 2)
    assert not got[:, 0].any()  # a point's own offset starts at its cell's centre
    np.testing.assert_allclose(got[:, 1:], expected, atol=1e-4)
    assert got[0, 1, 1] > 0.5 and got[8, 2, 0] > 0.5  # the jaw runs down from 0, right from 8


def test_a_checkpoint_of_other_layer_sizes_is_refused_by_the_new_head(short_run, subset_dir, tmp_path,
                                                                      caplog):
    import train

    _, checkpoint_dir, _, _ = short_run  # the 1.0x `mobile`: its layers are narrower
    code = train.main([
        "--data-dir", str(subset_dir), "--arch", "mobile-wide-nrm", "--epochs", "1",
        "--steps-per-epoch", "1", "--val-fraction", "0.02",
        "--init-weights", str(checkpoint_dir / "best_model.weights.h5"),
        "--checkpoint-dir", str(tmp_path / "bad"), "--no-download"])
    assert code == 2
    assert "cannot load its weights into --arch mobile-wide-nrm" in caplog.text
    assert not (tmp_path / "bad").exists()


# ---------------------------------------------------------------------------------------
# Runs that cannot succeed fail loudly (issue 12)
# ---------------------------------------------------------------------------------------


def test_non_finite_validation_stops_fit_with_an_error(tmp_path):
    """A validation loss that is NaN ends fit() with TrainingDiverged at that epoch's end."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.ones((16, 4), np.float32), np.zeros((16, 1), np.float32)
    broken_y = y.copy()
    broken_y[3] = np.nan
    best = callbacks.BestCheckpoint(tmp_path)
    with pytest.raises(callbacks.TrainingDiverged, match=r"epoch 1: val_loss = nan: training diverged"):
        model.fit(x, y, batch_size=4, epochs=3, verbose=0, validation_data=(x, broken_y),
                  callbacks=[callbacks.StopOnNonFiniteValidation(),
                             keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: best.on_epoch_end(
                                 e, {"val_nme": logs["val_loss"]}))])


def small_run_command(train_faces, tmp_path, *flags) -> list:
    """train.py on 40 real faces (dlib XML in tmp_path/data), 2 epochs of 2 steps, into
    tmp_path/run, with ``flags`` added."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    write_labels_xml(train_faces[:40], data_dir / "labels_ibug_300W_train.xml")
    return [sys.executable, "train.py", "--data-dir", str(data_dir), "--arch", "mobile",
            "--epochs", "2", "--steps-per-epoch", "2", "--batch-size", "4", "--split", "xml",
            "--val-fraction", "0.2", "--checkpoint-dir", str(tmp_path / "run"), "--no-download", *flags]


@pytest.mark.slow
def test_a_diverging_run_exits_non_zero(train_faces, tmp_path):
    command = small_run_command(train_faces, tmp_path, "--lr", "1e30")
    result = subprocess.run(command, cwd=REPO_DIR, capture_output=True, text=True, timeout=600)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "epoch 1: val_loss = nan" in result.stderr and "training diverged" in result.stderr
    assert not (tmp_path / "run" / callbacks.FINAL_FULL).exists()


def test_an_xml_without_faces_says_so(tmp_path, caplog):
    import train

    write_labels_xml([], tmp_path / "labels_ibug_300W_train.xml")
    config = train.parse_args(["--data-dir", str(tmp_path), "--split", "xml", "--no-download"])
    with pytest.raises(dataset.DataError, match=f"{tmp_path}: no faces in the training part"):
        train.prepare_data(config)


def test_best_pair_is_never_left_half_updated(tmp_path, monkeypatch):
    """Killed between the renames of a best-model save, the next start completes it: the
    weights file, the full model and best_state.json all describe the same epoch."""
    from model import build_network

    network = build_network("mobile", 128)
    best = callbacks.BestCheckpoint(tmp_path)
    best.set_model(network)
    best.on_epoch_end(0, {"val_nme": 0.5})
    first = [w.copy() for w in network.get_weights()]
    network.set_weights([w + 0.01 for w in first])

    real_replace, renamed = os.replace, []

    def killed_after_one_rename(source, target):
        if Path(source).name.startswith(".pending-") and renamed:
            raise KeyboardInterrupt  # the second rename never happens
        renamed.append(Path(target).name)
        real_replace(source, target)

    monkeypatch.setattr(callbacks.os, "replace", killed_after_one_rename)
    with pytest.raises(KeyboardInterrupt):
        best.on_epoch_end(1, {"val_nme": 0.4})
    monkeypatch.setattr(callbacks.os, "replace", real_replace)
    (tmp_path / ".tmp-999999999-final_model.h5").write_bytes(b"left by a killed run")

    resumed = callbacks.BestCheckpoint(tmp_path, resume=True)
    resumed.set_model(build_network("mobile", 128))
    resumed.on_train_begin()
    assert resumed.best == pytest.approx(0.4)
    assert json.loads((tmp_path / "best_state.json").read_text())["epoch"] == 2
    from_weights = build_network("mobile", 128)
    from_weights.load_weights(str(tmp_path / callbacks.BEST_WEIGHTS))
    from_full = load_full(tmp_path / callbacks.BEST_FULL)
    for a, b, saved in zip(from_weights.get_weights(), from_full.get_weights(), network.get_weights()):
        np.testing.assert_array_equal(a, saved)
        np.testing.assert_array_equal(b, saved)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [callbacks.BEST_WEIGHTS, callbacks.BEST_FULL, "best_state.json"])


def test_an_uncommitted_best_save_leaves_the_previous_pair(tmp_path):
    """Killed while the temporaries were being written (before the journal): the old pair
    stands and the half-written temporaries are removed at the next start."""
    from model import build_network

    network = build_network("mobile", 128)
    best = callbacks.BestCheckpoint(tmp_path)
    best.set_model(network)
    best.on_epoch_end(0, {"val_nme": 0.5})
    before = {name: (tmp_path / name).read_bytes() for name in (callbacks.BEST_WEIGHTS, "best_state.json")}
    (tmp_path / f".pending-{callbacks.BEST_FULL}").write_bytes(b"half a model")
    resumed = callbacks.BestCheckpoint(tmp_path, resume=True)
    resumed.set_model(network)
    resumed.on_train_begin()
    assert resumed.best == pytest.approx(0.5)
    assert {name: (tmp_path / name).read_bytes() for name in before} == before
    assert not list(tmp_path.glob(".pending-*"))


def test_a_resume_mid_epoch_says_plainly_that_the_epoch_is_trained_again(tmp_path):
    import train

    backup = tmp_path / "backup"
    assert tiny_fit(backup, 5, 3, Interrupt(2, 5)) == 2  # backups after steps 3 and 6 of epoch 3
    assert train.resume_point(backup) == (2, 5)
    message = train.resume_message(*train.resume_point(backup), 10, backup)
    assert message == (f"resuming at epoch 3 from the backup in {backup}, taken after step 6 of 10; "
                       "Keras starts every epoch at its first step, so all 10 steps of epoch 3 are "
                       "trained again from those weights (this run will not match an uninterrupted "
                       "one step for step)")
    assert tiny_fit(backup, 5, 3, Interrupt(3)) == 3  # stopped between epochs: nothing repeated
    assert train.resume_message(*train.resume_point(backup), 10, backup) == (
        f"resuming at epoch 4 from the backup in {backup}")


def test_extra_train_faces_join_the_training_faces_only(train_faces, subset_dir, tmp_path):
    import train

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    write_labels_xml(train_faces[:20], data_dir / "labels_ibug_300W_train.xml")
    extra_faces = dataset.parse_dlib_xml(subset_dir / TEST_XML)[:6]
    extra_xml = write_labels_xml(extra_faces, tmp_path / "teacher_labels.xml")
    base = Config(data_dir=str(data_dir), split="xml", val_fraction=0.2, seed=3)
    plain_train, plain_val = train.prepare_data(base)
    more_train, more_val = train.prepare_data(Config(**{**base.__dict__, "extra_train": str(extra_xml)}))

    assert len(more_train) == len(plain_train) + 6
    # the validation faces are the same ones, and none of the extra faces is among them
    assert [f.image_path for f in more_val.faces] == [f.image_path for f in plain_val.faces]
    extra_paths = {f.image_path for f in extra_faces}
    assert extra_paths <= {f.image_path for f in more_train.faces}
    assert not extra_paths & {f.image_path for f in more_val.faces}
    extra_items = [item for item in more_train.items if item.face.image_path in extra_paths]
    assert len(extra_items) == 6 and all(item.face.subset == "extra" for item in extra_items)
    np.testing.assert_allclose(extra_items[0].face.landmarks_px, extra_faces[0].landmarks_px, atol=1e-4)


def test_extra_train_file_without_faces_or_missing_is_refused(tmp_path, train_faces):
    import train

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    write_labels_xml(train_faces[:10], data_dir / "labels_ibug_300W_train.xml")
    empty = tmp_path / "empty.xml"
    empty.write_text("<dataset><images></images></dataset>")
    config = Config(data_dir=str(data_dir), split="xml", val_fraction=0.2, extra_train=str(empty))
    with pytest.raises(dataset.DataError, match="empty.xml: lists no faces"):
        train.prepare_data(config)
    missing = tmp_path / "missing.xml"
    with pytest.raises(dataset.DataError, match="missing.xml: cannot read"):
        train.prepare_data(Config(**{**config.__dict__, "extra_train": str(missing)}))


# ---------------------------------------------------------------------------------------
# (d) The console: what a user sees from a short run on a CPU
# ---------------------------------------------------------------------------------------

# Printed by TensorFlow and Keras at start-up or every epoch, telling a user nothing to act on.
CONSOLE_NOISE = ["absl::InitializeLog", "oneDNN custom operations", "Could not find cuda drivers",
                 "cpu_feature_guard", "failed call to cuInit", "saving your model as an HDF5 file",
                 "shuffle=True", "UserWarning"]


def user_environment() -> dict:
    """The environment a user runs a command in: without the log level the tests set, and
    with no GPU to use."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["CUDA_VISIBLE_DEVICES"] = ""
    return env


@pytest.mark.slow
def test_a_short_cpu_run_prints_what_it_uses_and_did_and_no_start_up_noise(train_faces, tmp_path):
    command = small_run_command(train_faces, tmp_path)
    result = subprocess.run(command, cwd=REPO_DIR, env=user_environment(), capture_output=True, text=True,
                            timeout=600)
    console = result.stdout + result.stderr
    assert result.returncode == 0, console[-3000:]
    for noise in CONSOLE_NOISE:
        assert noise not in console, f"{noise!r} in:\n{console}"
    assert "\n\n" not in console.strip()  # no empty lines between the informative ones
    for informative in ["devices: CPU", "faces: ", "steps per epoch", "parameters", "Epoch 2/2",
                        "val_nme: ", "saved best_model_full.h5", f"saved in {tmp_path / 'run'}:"]:
        assert informative in console, f"{informative!r} missing from:\n{console}"


def test_devices_are_named_with_the_compute_precision():
    import tensorflow as tf

    import train

    strategy = tf.distribute.get_strategy()
    line = train.describe_devices(strategy, mixed_precision=True)
    assert line.startswith("devices: ") and line.endswith("; mixed float16")
    gpus = tf.config.list_physical_devices("GPU")
    assert ("GPU:0" in line) if gpus else ("CPU" in line and "sees no GPU" in line)
    assert train.describe_devices(strategy, mixed_precision=False).endswith("; float32")


def test_gpus_are_named_with_their_model_and_those_left_unused_are_counted(monkeypatch):
    """No GPU here: TensorFlow's device list and details are stood in for two cards."""
    import types

    import tensorflow as tf

    import train

    cards = [types.SimpleNamespace(name=f"/physical_device:GPU:{i}", device_type="GPU") for i in (0, 1)]
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: cards if kind == "GPU" else [])
    monkeypatch.setattr(tf.config.experimental, "get_device_details",
                        lambda card: {"device_name": "NVIDIA GeForce RTX 3050", "compute_capability": (8, 6)})
    assert train.describe_devices(tf.distribute.get_strategy(), mixed_precision=False) == (
        "devices: GPU:0 NVIDIA GeForce RTX 3050 (compute capability 8.6) "
        "(1 more GPU unused: --strategy mirrored uses every GPU); float32")
    mirrored = types.SimpleNamespace(extended=types.SimpleNamespace(worker_devices=(
        "/job:localhost/replica:0/task:0/device:GPU:0", "/job:localhost/replica:0/task:0/device:GPU:1")))
    assert train.describe_devices(mirrored, mixed_precision=True) == (
        "devices: GPU:0 NVIDIA GeForce RTX 3050 (compute capability 8.6), "
        "GPU:1 NVIDIA GeForce RTX 3050 (compute capability 8.6); mixed float16")


# ---------------------------------------------------------------------------------------
# A run that cannot start changes nothing; bad flags are refused as flags
# ---------------------------------------------------------------------------------------

def trained_folder(folder: Path, arch: str = "mobile", backup: bool = False) -> dict:
    """A checkpoint folder as a finished (or, with ``backup``, interrupted) run leaves it."""
    config = Config(arch=arch, checkpoint_dir=str(folder))
    folder.mkdir()
    (folder / "config.json").write_text(config.to_json())
    (folder / "framing.json").write_text(json.dumps(framing_of(config), indent=2))
    (folder / callbacks.BEST_WEIGHTS).write_bytes(b"trained weights")
    if backup:
        (folder / "backup").mkdir()
        (folder / "backup" / "training_metadata.json").write_text('{"epoch": 3, "batch": 0}')
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_run_that_cannot_start_leaves_the_checkpoint_folder_as_it_was(tmp_path, caplog):
    import train

    folder = tmp_path / "ck"
    before = trained_folder(folder)
    code = train.main(["--checkpoint-dir", str(folder), "--data-dir", str(tmp_path / "typo"), "--no-download"])
    assert code == 2 and f"{tmp_path / 'typo'}: no dataset there" in caplog.text
    assert {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before


def test_resuming_a_backup_with_another_arch_is_refused_before_writing(tmp_path, caplog):
    import train

    folder = tmp_path / "ck"
    before = trained_folder(folder, arch="mobile", backup=True)
    # Refused on the backup alone, before the data is looked at.
    code = train.main(["--checkpoint-dir", str(folder), "--data-dir", str(tmp_path / "elsewhere"),
                       "--arch", "xception", "--no-download"])
    assert code == 2
    assert (f"--checkpoint-dir {folder}: holds the backup of a run with --arch mobile, not xception"
            in caplog.text)
    assert {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before


def test_a_checkpoint_dir_that_is_a_file_is_refused(tmp_path, caplog):
    import train

    not_a_folder = tmp_path / "ck"
    not_a_folder.write_text("keep me")
    code = train.main(["--checkpoint-dir", str(not_a_folder), "--data-dir", str(tmp_path), "--no-download"])
    assert code == 2 and f"--checkpoint-dir {not_a_folder}: is a file, not a folder" in caplog.text
    assert not_a_folder.read_text() == "keep me"


@pytest.mark.parametrize("flag, value, message", [
    ("--batch-size", "0", "--batch-size must be at least 1, got 0"),
    ("--image-dim", "100", "--image-dim 100 is not a multiple of 32"),
    ("--image-dim", "0", "--image-dim 0 is outside [32, 1024]"),
    ("--seed", "-1", "--seed must be at least 0, got -1"),
    ("--steps-per-epoch", "-1", "--steps-per-epoch must be at least 0, got -1"),
    ("--val-fraction", "-0.1", "--val-fraction must be in [0, 1), got -0.1"),
    ("--crop-margin", "nan", "--crop-margin nan is outside [0, 1]"),
])
def test_out_of_range_flags_are_refused(capsys, flag, value, message):
    import train

    with pytest.raises(SystemExit) as stop:
        train.parse_args([f"{flag}={value}"])
    assert stop.value.code == 2 and message in capsys.readouterr().err


def test_a_save_that_fails_part_way_leaves_no_pending_file(tmp_path):
    import errno

    def full_disk(path):
        Path(path).write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device", path)

    (tmp_path / "best_model.weights.h5").write_bytes(b"previous best")
    with pytest.raises(OSError, match="No space left"):
        callbacks.save_together(tmp_path, {"best_state.json": lambda p: Path(p).write_text("{}"),
                                           "best_model.weights.h5": full_disk})
    assert [p.name for p in tmp_path.iterdir()] == ["best_model.weights.h5"]
    assert (tmp_path / "best_model.weights.h5").read_bytes() == b"previous best"


def test_a_full_disk_while_training_is_one_error_line_and_exit_1(tmp_path, monkeypatch, caplog):
    import errno

    import train

    def full_disk(config):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "ck" / "best_model.weights.h5"))

    monkeypatch.setattr(train, "train", full_disk)
    assert train.main(["--checkpoint-dir", str(tmp_path / "ck")]) == 1
    assert (f"cannot write {tmp_path / 'ck' / 'best_model.weights.h5'}: No space left on device; the last "
            f"complete checkpoints in {tmp_path / 'ck'} stand") in caplog.text
