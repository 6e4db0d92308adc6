"""packed_train.py: the pack of faces, the time-based schedule, batch-norm recalibration,
a real (short) run on real faces, and the session's hard stop."""

import csv
import json
import math
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import keras
import numpy as np
import pytest

import dataset
import losses
import packed_train
from config import Config
from model import build_network

AFW_FACES = 12


@pytest.fixture(scope="module")
def small_data_dir(subset_dir, tmp_path_factory):
    """A dlib-layout folder of the first AFW faces of the real training XML."""
    root = tmp_path_factory.mktemp("small300w")
    os.symlink(subset_dir / "afw", root / "afw")
    tree = ET.parse(subset_dir / "labels_ibug_300W_train.xml")
    images = tree.getroot().find("images")
    kept = [el for el in images.findall("image") if el.get("file").startswith("afw/")][:AFW_FACES]
    for el in list(images):
        images.remove(el)
    images.extend(kept)
    tree.write(root / "labels_ibug_300W_train.xml")
    return root


@pytest.fixture(scope="module")
def pack_path(small_data_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("pack") / "faces.npz"
    counts = packed_train.pack_faces(Config(data_dir=str(small_data_dir), val_fraction=0.25), path)
    assert counts["train"] + counts["validation"] >= AFW_FACES
    return path


def test_pack_holds_train_pys_split_and_its_cached_faces(small_data_dir, pack_path):
    config = Config(data_dir=str(small_data_dir), val_fraction=0.25)
    faces = dataset.load_faces(small_data_dir, "train")
    train_faces, val_faces = dataset.split_by_image(faces, config.val_fraction, config.seed)
    pack = packed_train.load_pack(pack_path)
    assert (len(pack.train), len(pack.validation)) == (len(train_faces), len(val_faces))
    assert pack.config.to_json() == config.to_json()
    cached = dataset.LandmarkDataset(train_faces, config, training=True).items
    for packed, original in zip(pack.train, cached):
        assert packed.face.image_path == os.path.relpath(original.face.image_path, small_data_dir)
        np.testing.assert_array_equal(packed.landmarks_px, original.landmarks_px)
        assert packed.box_xywh == pytest.approx(original.box_xywh, abs=1e-9)
        assert packed.region.shape == original.region.shape
        # JPEG at quality 90: within a couple of grey levels on average.
        assert np.abs(packed.region.astype(int) - original.region).mean() < 2.0


def test_time_lr_warms_up_then_follows_a_cosine_to_one_percent():
    peak = 1e-3
    assert packed_train.time_lr(0.0, peak, 0.1) == pytest.approx(peak * 0.01)
    assert packed_train.time_lr(0.05, peak, 0.1) == pytest.approx(peak * 0.5)
    assert packed_train.time_lr(0.1, peak, 0.1) == pytest.approx(peak)
    # Half-way through the cosine part: (0.01 + 0.99 * 0.5) of the peak.
    assert packed_train.time_lr(0.55, peak, 0.1) == pytest.approx(peak * 0.505)
    assert packed_train.time_lr(1.0, peak, 0.1) == pytest.approx(peak * 0.01)
    assert packed_train.time_lr(3.0, peak, 0.0) == pytest.approx(peak * 0.01)


def test_variant_text_round_trips_and_unknown_keys_are_refused():
    variant = packed_train.Variant.parse("w:mobile-wide:lr=3e-4:dim=160:init=a/b.weights.h5:ema=0.99")
    assert (variant.arch, variant.lr, variant.dim, variant.init, variant.ema) == (
        "mobile-wide", 3e-4, 160, "a/b.weights.h5", 0.99)
    assert packed_train.Variant.parse(packed_train.variant_text(variant)) == variant
    with pytest.raises(ValueError, match="unknown key 'epochs'"):
        packed_train.Variant.parse("x:mobile:epochs=3")


def test_recalibrate_batchnorm_sets_the_mean_of_the_batch_statistics():
    inputs = keras.Input((2, 2, 1))
    norm = keras.layers.BatchNormalization(momentum=0.9)
    model = keras.Model(inputs, norm(inputs))
    norm.moving_mean.assign([100.0])
    norm.moving_variance.assign([100.0])
    rng = np.random.default_rng(0)
    crops = np.concatenate([rng.normal(3.0, 2.0, (4, 2, 2, 1)), rng.normal(5.0, 1.0, (4, 2, 2, 1))])
    packed_train.recalibrate_batchnorm(model, crops.astype(np.float32), batch_size=4)
    halves = crops.reshape(2, -1)
    assert float(norm.moving_mean.numpy()[0]) == pytest.approx(halves.mean(axis=1).mean(), rel=1e-5)
    assert float(norm.moving_variance.numpy()[0]) == pytest.approx(halves.var(axis=1).mean(), rel=1e-4)
    assert norm.momentum == 0.9
    # Weights are untouched.
    assert float(norm.gamma.numpy()[0]) == 1.0 and float(norm.beta.numpy()[0]) == 0.0


def test_a_short_run_on_real_faces_writes_loadable_recalibrated_weights(pack_path, tmp_path):
    variant = packed_train.Variant("tiny", "mobile", lr=1e-3, batch=4)
    summary = packed_train.run_variant(pack_path, variant, minutes=0.001, out_dir=tmp_path,
                                       workers=1, steps_per_epoch=2, bf16=False,
                                       recalibration_crops=64)
    assert summary["epochs"] == 1 and summary["steps"] == 2
    assert math.isfinite(summary["best_val_nme_recalibrated"])
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["variant"] == "tiny"
    assert (tmp_path / "history.csv").read_text().splitlines()[0].startswith("epoch,")
    pack = packed_train.load_pack(pack_path)
    val = dataset.LandmarkDataset.from_items(pack.validation, Config(), training=False)
    val_x, val_y = val.arrays()
    for name in ("best_model.weights.h5", "final_model.weights.h5"):
        network = build_network("mobile", 128)
        network.load_weights(str(tmp_path / name))  # the bare network: no optimizer state
        if name == "best_model.weights.h5":
            nme = float(np.mean(np.asarray(losses.nme(val_y, network.predict(val_x, verbose=0)))))
            assert nme == pytest.approx(summary["best_val_nme_recalibrated"], rel=1e-4)
    assert (tmp_path / "final_model.weights.h5").stat().st_size < 3_000_000


def test_a_run_with_a_teacher_trains_on_the_teachers_points(pack_path, tmp_path):
    """lr 0 and distill=1: the first epoch's loss is the Wing loss between the student (in
    training mode) and the teacher on the very batches the workers built, recomputed here."""
    import distill

    keras.utils.set_random_seed(5)
    teacher_file = tmp_path / "teacher.weights.h5"
    build_network("mobile", 128).save_weights(str(teacher_file))
    variant = packed_train.Variant("taught", "mobile", lr=0.0, batch=4, init=str(teacher_file),
                                   teacher=f"mobile={teacher_file}", distill=1.0)
    assert packed_train.Variant.parse(packed_train.variant_text(variant)) == variant
    packed_train.run_variant(pack_path, variant, minutes=0.001, out_dir=tmp_path / "run", workers=1,
                             steps_per_epoch=2, bf16=False, recalibration_crops=8, seed=3)
    with open(tmp_path / "run" / "history.csv", newline="") as f:
        reported = float(next(csv.DictReader(f))["loss"])

    pack = packed_train.load_pack(pack_path)
    config = Config.from_json_file(tmp_path / "run" / "config.json")
    stream = packed_train.training_batches(pack_path, config, len(pack.train), 4, 1, 3)
    student = build_network("mobile", 128)
    student.load_weights(str(teacher_file))
    teacher = distill.Teacher(distill.parse_teachers(f"mobile={teacher_file}"), 128)
    wing = losses.WingLoss(image_dim=128)
    per_step = [float(wing(teacher.predict(images), student(images, training=True)))
                for images, _ in (next(stream) for _ in range(2))]
    stream.close()
    assert reported == pytest.approx(np.mean(per_step), rel=1e-3)


def test_wait_or_stop_terminates_a_run_past_its_deadline():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    started = time.time()
    code = packed_train.wait_or_stop(process, time.time() + 1.0)
    assert code != 0 and time.time() - started < 20
    quick = subprocess.Popen([sys.executable, "-c", "pass"])
    assert packed_train.wait_or_stop(quick, time.time() + 30) == 0
