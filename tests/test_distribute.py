"""train.py under tf.distribute, on CPUs: MirroredStrategy over two logical CPU devices, and
MultiWorkerMirroredStrategy as two local processes talking over loopback ports. Each run
trains a few real steps on faces of the 300-W subset, in processes of its own: TensorFlow
fixes its devices and its multi-worker runtime once per process.

This file is also the worker those tests start: ``python tests/test_distribute.py
--result R.npz [--logical-cpus N] [--judge] -- TRAIN_FLAGS`` runs ``train.train`` and saves
the trained weights; with ``--judge``, also their NME on the validation faces, computed on
one device.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO_DIR, data_root, require_data

WORKER_TIMEOUT_S = 400
# Two steps of 4 faces per replica, 64-pixel crops: enough to exercise every exchange
# between replicas, small enough for two busy CPU cores.
TINY_RUN = ["--arch", "mobile", "--image-dim", "64", "--epochs", "1", "--steps-per-epoch", "2",
            "--batch-size", "4", "--split", "xml", "--val-fraction", "0.25", "--no-download"]


def subset_dir() -> Path:
    """The real 300-W subset; skipped without it on a developer's machine, failed in CI."""
    return require_data(data_root() / "300w_subset", "the 300-W subset")


def few_real_faces(folder: Path, images: int = 84) -> Path:
    """A ``labels_ibug_300W_train.xml`` in ``folder`` listing the first ``images`` photos
    of the subset's training file by absolute path: real faces, read in place (never
    copied), without decoding all 2000 of them in every process. With 84 photos and
    ``--val-fraction 0.25``, 21 faces validate: the last batch of 8 is split unevenly."""
    source = subset_dir() / "labels_ibug_300W_train.xml"
    root = ET.parse(source).getroot()
    listed = root.find("images")
    for image in listed.findall("image")[images:]:
        listed.remove(image)
    for image in listed.findall("image"):
        image.set("file", str((source.parent / image.get("file")).resolve()))
    folder.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(folder / source.name)
    return folder


# ---------------------------------------------------------------------------------------
# The worker process
# ---------------------------------------------------------------------------------------

def worker_main(argv: list[str]) -> None:
    split = argv.index("--")
    options, train_argv = argv[:split], argv[split + 1:]
    result_path = Path(options[options.index("--result") + 1])
    logical_cpus = int(options[options.index("--logical-cpus") + 1]) if "--logical-cpus" in options else 1
    judge = "--judge" in options

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import tensorflow as tf

    if logical_cpus > 1:  # before TensorFlow starts
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * logical_cpus)
    sys.path.insert(0, str(REPO_DIR))
    import dataset
    import train
    from config import LEFT_EYE_OUTER, NUM_LANDMARKS, RIGHT_EYE_OUTER
    from model import build_network

    config = train.parse_args(train_argv)
    summary = train.train(config)
    weights = summary.pop("model").get_weights()
    summary = json.dumps({k: v for k, v in summary.items() if k != "skipped"})
    if not judge:
        np.savez(result_path, *weights, summary=summary)
        return

    # The trained weights on one device, judged on the validation faces chosen as train.py
    # chooses them: what the logged val_nme must equal.
    faces = dataset.load_faces(config.data_dir, "train", config.split)
    _, val_faces = dataset.split_by_image(faces, config.val_fraction, config.seed)
    val_data = dataset.LandmarkDataset(val_faces, config, training=False)
    network = build_network(config.arch, config.image_dim)
    network.set_weights(weights)
    truth = np.stack([val_data.sample(i)[1] for i in range(len(val_data))])
    predicted = network.predict(val_data.tf_dataset(8), verbose=0)
    points_true = truth.reshape(-1, NUM_LANDMARKS, 2)
    points_pred = predicted.reshape(-1, NUM_LANDMARKS, 2)
    inter_ocular = np.linalg.norm(points_true[:, LEFT_EYE_OUTER] - points_true[:, RIGHT_EYE_OUTER], axis=-1)
    nme = np.linalg.norm(points_true - points_pred, axis=-1).mean(axis=-1) / inter_ocular
    np.savez(result_path, *weights, summary=summary, val_nme_one_device=nme.mean(),
             val_faces=len(val_data))


def run_workers(commands_envs, log_dir: Path) -> None:
    """Start every worker at once and wait for all; fail with the logs of any that failed
    or did not finish in time (a worker left alone waits for its peers)."""
    processes, logs = [], [log_dir / f"worker{i}.log" for i in range(len(commands_envs))]
    for (command, env), log_path in zip(commands_envs, logs):
        with open(log_path, "w") as log:
            processes.append(subprocess.Popen(command, cwd=REPO_DIR, env=env, stdout=log,
                                              stderr=subprocess.STDOUT))
    deadline = time.monotonic() + WORKER_TIMEOUT_S
    try:
        for process in processes:
            process.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    failures = [f"worker {i} exited with {process.returncode}:\n{log.read_text()[-4000:]}"
                for i, (process, log) in enumerate(zip(processes, logs)) if process.returncode != 0]
    assert not failures, "\n\n".join(failures)


def worker_command(result: Path, train_flags: list[str], logical_cpus: int = 1,
                   judge: bool = False) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--result", str(result),
            "--logical-cpus", str(logical_cpus), *(["--judge"] if judge else []), "--",
            *train_flags]


def worker_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    return {**env, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "-1", **extra}


def free_loopback_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def read_result(path: Path) -> dict:
    """weights, summary and, from a judging worker, val_nme_one_device and val_faces."""
    with np.load(path) as result:
        weights = [result[name] for name in sorted((n for n in result.files if n.startswith("arr_")),
                                                   key=lambda n: int(n[4:]))]
        judged = {k: result[k].item() for k in ("val_nme_one_device", "val_faces") if k in result}
        return {"weights": weights, "summary": json.loads(str(result["summary"])), **judged}


def logged_val_nme(checkpoint_dir: Path) -> float:
    with open(checkpoint_dir / "history.csv", newline="") as f:
        return float(list(csv.DictReader(f))[-1]["val_nme"])


CHIEF_FILES = ("config.json", "framing.json", "best_model.weights.h5", "best_model_full.h5",
               "best_state.json", "final_model.h5", "history.csv", "history.png")


# ---------------------------------------------------------------------------------------
# Cheap checks, in this process
# ---------------------------------------------------------------------------------------

def test_flags_say_per_replica_batch_and_unscaled_learning_rate(capsys):
    import train

    config = train.parse_args(["--strategy", "multiworker", "--mixed-precision", "--jit"])
    assert (config.strategy, config.mixed_precision, config.jit) == ("multiworker", True, True)
    default = train.parse_args([])
    assert (default.strategy, default.mixed_precision, default.jit) == ("default", False, False)
    with pytest.raises(SystemExit):
        train.parse_args(["--strategy", "parameter-server"])
    with pytest.raises(SystemExit):
        train.parse_args(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "images per training step on each replica" in help_text
    assert "not scaled" in help_text


def test_tf_config_errors_name_the_fault():
    from distribute import StrategyError, check_tf_config

    with pytest.raises(StrategyError, match="needs TF_CONFIG"):
        check_tf_config(None)
    with pytest.raises(StrategyError, match="not JSON"):
        check_tf_config("{cluster: ")
    with pytest.raises(StrategyError, match="is not in the cluster"):
        check_tf_config(json.dumps({"cluster": {"worker": ["127.0.0.1:1"]},
                                    "task": {"type": "worker", "index": 1}}))
    good = {"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}
    assert check_tf_config(json.dumps(good)) == good


def test_worker_shards_split_each_epoch_between_them():
    """Two shards of the training stream: every face of an epoch once, in one shard only,
    warped exactly as the unsharded stream warps it."""
    import dataset
    from config import Config

    faces = dataset.parse_dlib_xml(subset_dir() / "labels_ibug_300W_test.xml")[:9]
    data = dataset.LandmarkDataset(faces, Config(), training=True)

    def epoch_samples(shard):
        stream = data.tf_dataset(batch_size=1, first_epoch=3, shard=shard)
        return [landmarks.numpy().tobytes() for _, landmarks in stream]

    whole = epoch_samples((1, 0))
    first, second = epoch_samples((2, 0)), epoch_samples((2, 1))
    assert (len(whole), len(first), len(second)) == (9, 5, 4)
    assert sorted(first + second) == sorted(whole)
    assert not set(first) & set(second)


# ---------------------------------------------------------------------------------------
# Real training in worker processes
# ---------------------------------------------------------------------------------------

def test_mirrored_over_two_cpu_devices_trains_and_validates_like_one_device(tmp_path):
    checkpoint_dir = tmp_path / "run"
    flags = ["--data-dir", str(few_real_faces(tmp_path / "data")), *TINY_RUN,
             "--strategy", "mirrored", "--checkpoint-dir", str(checkpoint_dir)]
    run_workers([(worker_command(tmp_path / "result.npz", flags, logical_cpus=2, judge=True),
                  worker_env())], tmp_path)

    result = read_result(tmp_path / "result.npz")
    summary = result["summary"]
    assert summary["replicas"] == 2 and summary["global_batch_size"] == 8  # 4 per replica
    assert summary["epochs_run"] == 1 and summary["val_faces"] == result["val_faces"] == 21
    for name in CHIEF_FILES:
        assert (checkpoint_dir / name).is_file(), name
    # Validation batches split over the two replicas (the last one unevenly) still give
    # the mean over every face, of the model that was saved.
    assert logged_val_nme(checkpoint_dir) == pytest.approx(result["val_nme_one_device"], rel=1e-4)


def test_two_workers_train_in_step_and_only_the_chief_writes(tmp_path):
    data_dir = few_real_faces(tmp_path / "data")
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_loopback_ports(2)]}
    runs = []
    for index in range(2):
        # A checkpoint directory each, as on two machines: the second must stay unwritten.
        flags = ["--data-dir", str(data_dir), *TINY_RUN, "--strategy", "multiworker",
                 "--checkpoint-dir", str(tmp_path / f"worker{index}_checkpoints")]
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        runs.append((worker_command(tmp_path / f"result{index}.npz", flags, judge=index == 0),
                     worker_env(TF_CONFIG=tf_config)))
    run_workers(runs, tmp_path)

    chief, other = read_result(tmp_path / "result0.npz"), read_result(tmp_path / "result1.npz")
    assert chief["summary"]["replicas"] == 2 and chief["summary"]["global_batch_size"] == 8
    assert chief["summary"]["epochs_run"] == other["summary"]["epochs_run"] == 1
    for name in CHIEF_FILES:
        assert (tmp_path / "worker0_checkpoints" / name).is_file(), name
    assert not (tmp_path / "worker1_checkpoints").exists()
    # The same model on both workers, BatchNormalization statistics included.
    assert len(chief["weights"]) == len(other["weights"]) > 100
    for chief_weights, other_weights in zip(chief["weights"], other["weights"]):
        np.testing.assert_array_equal(chief_weights, other_weights)
    # Validation split over the two workers: each face counted once, in the logged mean.
    assert (logged_val_nme(tmp_path / "worker0_checkpoints")
            == pytest.approx(chief["val_nme_one_device"], rel=1e-4))


if __name__ == "__main__":
    worker_main(sys.argv[1:])
