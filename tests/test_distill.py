"""distill.py and losses.DistillationLoss: the teacher's points are the mean of its networks
(and of their mirrored crops, mapped back), they reach the loss in a real training run, and
validation is scored on the annotations alone."""

import csv
import math

import keras
import numpy as np
import pytest

import dataset
import distill
import geometry
import losses
from config import Config
from model import build_network

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def teacher_files(tmp_path_factory):
    """Two differently initialised `mobile` networks' weights (the mechanism, not accuracy)."""
    folder = tmp_path_factory.mktemp("teachers")
    paths = []
    for seed in (1, 2):
        keras.utils.set_random_seed(seed)
        network = build_network("mobile", 128)
        path = folder / f"teacher{seed}.weights.h5"
        network.save_weights(str(path))
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def crops(subset_dir):
    faces = dataset.load_faces(subset_dir, "train")[:6]
    return dataset.LandmarkDataset(faces, Config(), training=False).arrays()


def test_parse_teachers_reads_each_entry_and_names_the_fault(teacher_files, tmp_path):
    first, second = teacher_files
    specs = distill.parse_teachers(f"mobile={first}, mobile-wide={second}")
    assert [(s.arch, s.weights) for s in specs] == [("mobile", first), ("mobile-wide", second)]
    with pytest.raises(distill.TeacherError, match="expected ARCH=WEIGHTS_FILE"):
        distill.parse_teachers(str(first))
    with pytest.raises(distill.TeacherError, match="unknown architecture 'resnet'"):
        distill.parse_teachers(f"resnet={first}")
    missing = tmp_path / "none.weights.h5"
    with pytest.raises(distill.TeacherError, match=f"{missing}: teacher weights file not found"):
        distill.parse_teachers(f"mobile={missing}")
    with pytest.raises(distill.TeacherError, match="names no network"):
        distill.parse_teachers(" , ")


def test_flip_back_is_unmirror_landmarks_in_normalised_coordinates():
    from keras import ops

    rng = np.random.default_rng(0)
    norm = rng.uniform(-0.5, 0.5, (3, 136)).astype(np.float32)
    got = np.asarray(distill.flip_back(norm, ops)).reshape(3, 68, 2)
    pixels = geometry.norm_to_px(norm.reshape(3, 68, 2), 128)
    want = geometry.px_to_norm(geometry.unmirror_landmarks(pixels, 128), 128)
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_teacher_is_the_mean_of_its_networks_and_their_mirrored_crops(teacher_files, crops):
    images, _ = crops
    specs = distill.parse_teachers(",".join(f"mobile={p}" for p in teacher_files))
    teacher = distill.Teacher(specs, 128, flip=True)
    expected = []
    for path in teacher_files:
        network = build_network("mobile", 128)
        network.load_weights(str(path))
        expected.append(network.predict(images, verbose=0))
        mirrored = network.predict(images[:, :, ::-1], verbose=0).reshape(-1, 68, 2)
        unmirrored = geometry.px_to_norm(geometry.unmirror_landmarks(geometry.norm_to_px(mirrored, 128), 128), 128)
        expected.append(unmirrored.reshape(-1, 136))
    np.testing.assert_allclose(np.asarray(teacher(images)), np.mean(expected, axis=0), atol=2e-5)
    plain = distill.Teacher(specs[:1], 128, flip=False)
    np.testing.assert_allclose(np.asarray(plain(images)), expected[0], atol=2e-5)


def test_a_teacher_of_another_architecture_is_refused_by_name(teacher_files):
    with pytest.raises(distill.TeacherError, match=f"{teacher_files[0]}: cannot load its weights into --arch mobile-wide"):
        distill.Teacher(distill.parse_teachers(f"mobile-wide={teacher_files[0]}"), 128)


def wing(pixels, width=10.0, epsilon=2.0):
    return width * math.log(1 + pixels / epsilon) if pixels < width else \
        pixels - (width - width * math.log(1 + width / epsilon))


def test_distillation_loss_mixes_the_annotation_and_teacher_terms_by_hand():
    truth = np.zeros((1, 136), np.float32)
    teacher = np.zeros((1, 136), np.float32)
    teacher[0, 10] = 6.0 / 128  # the teacher puts point 5's x 6 px to the right
    pred = np.zeros((1, 136), np.float32)
    pred[0, 10] = 2.0 / 128  # the student 2 px to the right
    base = losses.WingLoss(image_dim=128)
    loss = losses.DistillationLoss(base, teacher_weight=0.25)
    targets = np.concatenate([truth, teacher], axis=1)
    assert float(loss(targets, pred)) == pytest.approx((0.75 * wing(2.0) + 0.25 * wing(4.0)) / 136, rel=1e-5)
    # Validation targets: the annotations alone.
    assert float(loss(truth, pred)) == pytest.approx(wing(2.0) / 136, rel=1e-5)
    # The metric never reads the teacher's half.
    truth[0, 72], truth[0, 90] = -0.2, 0.2  # eye corners 36 and 45, 0.4 crop sides apart
    np.testing.assert_allclose(np.asarray(losses.nme(np.concatenate([truth, teacher], 1), pred)),
                               np.asarray(losses.nme(truth, pred)))
    with pytest.raises(ValueError, match=r"teacher_weight must be in \[0, 1\]"):
        losses.DistillationLoss(base, 1.5)


def test_a_training_run_learns_from_the_teachers_points(subset_dir, teacher_files, tmp_path):
    """lr 0 and distill-weight 1: every step's loss is the Wing loss between the student
    (in training mode) and the teacher's mean points on that step's augmented crops; the
    run's reported loss is their mean, recomputed here batch by batch."""
    import train

    teacher_arg = ",".join(f"mobile={p}" for p in teacher_files)
    config = train.parse_args([
        "--data-dir", str(subset_dir), "--arch", "mobile", "--epochs", "1", "--steps-per-epoch", "2",
        "--batch-size", "4", "--val-fraction", "0.02", "--lr", "0", "--loss", "wing",
        "--init-weights", str(teacher_files[0]), "--teacher", teacher_arg, "--distill-weight", "1",
        "--checkpoint-dir", str(tmp_path / "run"), "--no-download"])
    summary = train.train(config)
    with open(tmp_path / "run" / "history.csv", newline="") as f:
        reported = float(next(csv.DictReader(f))["loss"])

    student = build_network("mobile", 128)
    student.load_weights(str(teacher_files[0]))
    teacher = distill.Teacher(distill.parse_teachers(teacher_arg), 128)
    train_data, _ = train.prepare_data(config)
    wing_loss = losses.WingLoss(image_dim=128)
    per_step = [float(wing_loss(np.asarray(teacher(images)), student(images, training=True)))
                for images, _ in train_data.tf_dataset(4, repeat=True).take(2)]
    assert reported == pytest.approx(np.mean(per_step), rel=1e-3)
    # The annotations alone would give a very different loss: the teacher is untrained.
    first_images, first_truth = next(iter(train_data.tf_dataset(4, repeat=True)))
    truth_loss = float(wing_loss(first_truth, student(first_images, training=True)))
    assert abs(truth_loss - reported) > 0.2 * reported
    assert summary["epochs_run"] == 1


def test_train_refuses_a_missing_teacher_before_loading_data(tmp_path, caplog):
    import train

    code = train.main(["--data-dir", str(tmp_path / "no-data"), "--no-download", "--teacher",
                       f"mobile={tmp_path / 'gone.weights.h5'}", "--checkpoint-dir", str(tmp_path / "out")])
    assert code == 2
    assert f"{tmp_path / 'gone.weights.h5'}: teacher weights file not found" in caplog.text
