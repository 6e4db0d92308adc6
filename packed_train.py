"""Long training runs on a GPU machine that has Keras 3 but no TensorFlow (JAX or PyTorch
installed instead), from a packed copy of the faces.

    # where the data is: the training faces' regions, as train.py caches them
    python packed_train.py pack --data-dir ../shared/data/300w_subset --out out/faces.npz
    # on the GPU machine: one or several runs side by side on one GPU, each for a fixed time
    KERAS_BACKEND=jax python packed_train.py session --pack out/faces.npz --out out/ \\
        --variant mobile-ft:mobile:init=models/keras/best_model.weights.h5:lr=5e-4 \\
        --variant mobile-s4:mobile-s4:lr=2e-3 --minutes 6
    # each run's folder, also in out/<name>.tar.gz: its weights load into the TensorFlow
    # model as any train.py checkpoint
    python export_tflite.py --model runs/packed/mobile-ft/best_model.weights.h5 ...

The pack holds what ``LandmarkDataset`` keeps in memory (each face's small grey region, its
box and points in region pixels), JPEG-compressed, with the training/validation split of
``train.py`` (``--val-fraction``, ``--seed``): augmentation is the same code and the same
pixels as ``train.py``'s, up to the JPEG step. The pack holds crops of the dataset's photos,
under the dataset's licence: keep it out of a public repository (``out/`` is ignored).

A run is given minutes, not epochs: the learning rate follows a cosine over the run's wall
time (after a linear warm-up), so a slower or faster machine trains fewer or more steps on
the same schedule. Adam keeps an exponential moving average of the weights; validation and
the best checkpoint use the averaged weights, and at the end each checkpoint's batch-norm
statistics are recalibrated for the averaged weights (``recalibrate_batchnorm``). Data
augmentation runs in worker processes (``--workers``), a few batches ahead of the GPU.

``session`` stops every run at a deadline (``--minutes`` + ``--slack`` for compiling, plus a
minute to save) and archives whatever each run wrote, so that on a machine with a time limit
a run that overstays cannot take the other runs' results with it.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import multiprocessing
import os
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from config import Config, framing_of

JPEG_QUALITY = 90
# A session stops its runs this long after their minutes, even if compiling took longer;
# a run still alive FINISH_S after that (recalibrating, saving) is terminated.
DEADLINE_SLACK_S = 150
FINISH_S = 60


# ---------------------------------------------------------------------------------------
# The pack
# ---------------------------------------------------------------------------------------

def pack_faces(config: Config, out_path, quality: int = JPEG_QUALITY) -> dict:
    """Write the training faces of ``config.data_dir``, split as train.py splits them, to
    ``out_path`` (.npz). Returns counts for the log."""
    from train import prepare_data

    train_data, val_data = prepare_data(config)
    parts = [(train_data, False), (val_data, True)]
    blobs, boxes, points, held_out, names = [], [], [], [], []
    root = os.path.abspath(config.data_dir)
    for data, is_val in parts:
        for item in data.items:
            ok, encoded = cv2.imencode(".jpg", item.region, [cv2.IMWRITE_JPEG_QUALITY, quality])
            if not ok:
                raise RuntimeError(f"{item.face.image_path}: could not encode its region")
            blobs.append(encoded.reshape(-1))
            boxes.append(item.box_xywh)
            points.append(item.landmarks_px)
            held_out.append(is_val)
            names.append(os.path.relpath(item.face.image_path, root))
    offsets = np.cumsum([0] + [len(b) for b in blobs])
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out_path, jpeg=np.concatenate(blobs), offsets=offsets,
             boxes=np.asarray(boxes, np.float64), landmarks=np.asarray(points, np.float32),
             held_out=np.asarray(held_out), names=np.asarray(names),
             config=np.asarray(config.to_json()))
    return {"train": len(parts[0][0]), "validation": len(parts[1][0]),
            "megabytes": round(out_path.stat().st_size / 1e6, 1)}


@dataclass
class Pack:
    config: Config
    train: list  # dataset.CachedFace
    validation: list


def load_pack(path) -> Pack:
    """The faces of a pack as ``dataset.CachedFace`` items, ready for ``LandmarkDataset``.
    Their ``face`` records name the photo (relative to the data folder) for messages; the
    box and points there are, like the item's, in region pixels."""
    import dataset

    with np.load(path) as data:  # each data[key] reads the file again: read each once
        arrays = {key: data[key] for key in data.files}
    config = Config(**json.loads(str(arrays["config"])))
    jpeg, offsets = arrays["jpeg"], arrays["offsets"]
    train, validation = [], []
    for i, name in enumerate(arrays["names"]):
        region = cv2.imdecode(jpeg[offsets[i]:offsets[i + 1]], cv2.IMREAD_GRAYSCALE)
        if region is None:
            raise dataset.DataError(f"{path}: face {i} ({name}) does not decode")
        box = tuple(float(v) for v in arrays["boxes"][i])
        points = arrays["landmarks"][i]
        item = dataset.CachedFace(region, box, points, dataset.Face(str(name), box, points, "train", str(path)))
        (validation if arrays["held_out"][i] else train).append(item)
    return Pack(config, train, validation)


# ---------------------------------------------------------------------------------------
# Batches from worker processes
# ---------------------------------------------------------------------------------------

_WORKER = {}


def _worker_init(pack_path: str, config_json: str) -> None:
    import dataset

    pack = load_pack(pack_path)
    config = Config(**json.loads(config_json))
    _WORKER["data"] = dataset.LandmarkDataset.from_items(pack.train, config, training=True)


def _worker_batch(task):
    """(indices, draw) -> (images uint8 [B, D, D, 1], landmarks [B, 136] float32)."""
    indices, draw = task
    data = _WORKER["data"]
    images, targets = zip(*(data.sample(int(i), draw) for i in indices))
    # The crops are uint8 grey scaled to [-1, 1]: ship the bytes, scale on arrival.
    pixels = np.rint((np.stack(images) + 1.0) * 127.5).astype(np.uint8)
    return pixels, np.stack(targets)


def training_batches(pack_path, config: Config, count: int, batch_size: int, workers: int,
                     seed: int, ahead: int = 4):
    """Endless (images float32 in [-1, 1], landmarks [B, 136]) batches: each pass over the
    training faces in a fresh permutation, each face augmented afresh (draw = pass number).
    Built by ``workers`` processes, ``ahead`` batches per worker in flight."""
    context = multiprocessing.get_context("spawn")  # never fork a process running JAX
    pool = context.Pool(workers, _worker_init, (str(pack_path), config.to_json()))

    def tasks():
        rng = np.random.default_rng(seed)
        draw = 0
        while True:
            order = rng.permutation(count)
            for start in range(0, count - batch_size + 1, batch_size):
                yield order[start:start + batch_size], draw
            draw += 1

    def batches():
        pending = collections.deque()
        source = tasks()
        try:
            while True:
                while len(pending) < ahead * workers:
                    pending.append(pool.apply_async(_worker_batch, (next(source),)))
                pixels, targets = pending.popleft().get()
                yield pixels.astype(np.float32) / 127.5 - 1.0, targets
        finally:
            pool.terminate()

    return batches()


# ---------------------------------------------------------------------------------------
# One run
# ---------------------------------------------------------------------------------------

def time_lr(fraction: float, peak: float, warmup: float, final: float = 0.01) -> float:
    """Learning rate at ``fraction`` of the run's time: linear warm-up over the first
    ``warmup`` of it, then a cosine from ``peak`` down to ``final * peak``."""
    fraction = min(max(fraction, 0.0), 1.0)
    if warmup > 0 and fraction < warmup:
        return peak * max(fraction / warmup, 0.01)
    progress = (fraction - warmup) / max(1.0 - warmup, 1e-9)
    return peak * (final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def make_time_budget(seconds: float, peak_lr: float, warmup: float, log, deadline: float = math.inf):
    """A Keras callback: the learning rate by ``time_lr`` of the time spent since the first
    step ended (compiling is not counted); training stops at the first epoch end past
    ``seconds``, or past the wall-clock ``deadline`` (``time.time()``) whatever the schedule
    says. It records images/s over the timed steps in ``self.rate``."""
    import keras

    class TimeBudget(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.started = None
            self.steps = 0
            self.rate = {}

        def fraction(self):
            return 0.0 if self.started is None else (time.time() - self.started) / seconds

        def on_epoch_begin(self, epoch, logs=None):
            self.model.optimizer.learning_rate = time_lr(self.fraction(), peak_lr, warmup)

        def on_train_batch_end(self, batch, logs=None):
            if self.started is None:
                self.started = time.time()
            else:
                self.steps += 1

        def on_epoch_end(self, epoch, logs=None):
            if logs is not None:  # the rate the optimizer used this epoch, read back
                logs["lr"] = float(np.asarray(self.model.optimizer.learning_rate))
                logs["seconds"] = round(time.time() - (self.started or time.time()), 1)
            if self.fraction() >= 1.0 or time.time() >= deadline:
                self.model.stop_training = True

        def on_train_end(self, logs=None):
            elapsed = time.time() - (self.started or time.time())
            self.rate = {"timed_steps": self.steps, "timed_seconds": round(elapsed, 1)}
            log(f"timed {self.steps} steps in {elapsed:.1f} s")

    return TimeBudget()


@dataclass
class Variant:
    """One run of a session: ``name:arch[:key=value...]``, keys ``init`` (weights to start
    from), ``lr`` (peak), ``warmup`` (fraction of the time), ``batch``, ``dim`` (input size;
    default the pack's: the regions were shrunk for it, so a larger one sees softer pixels),
    ``ema`` (momentum of the averaged weights: 0.999 averages over about the last 1000 steps),
    ``teacher`` (distillation: ``ARCH=WEIGHTS[,ARCH=WEIGHTS...]`` as train.py's ``--teacher``)
    and ``distill`` (the teacher's share of the loss)."""
    name: str
    arch: str
    init: str = ""
    lr: float = 2e-3
    warmup: float = 0.03
    batch: int = 256
    dim: int = 0
    ema: float = 0.999  # momentum of the weights' moving average
    teacher: str = ""
    distill: float = 0.5

    KEYS = {"init": str, "lr": float, "warmup": float, "batch": int, "dim": int, "ema": float,
            "teacher": str, "distill": float}

    @classmethod
    def parse(cls, text: str) -> "Variant":
        name, arch, *options = text.split(":")
        values = {}
        for option in options:
            key, _, value = option.partition("=")
            if key not in cls.KEYS:
                raise ValueError(f"--variant {text!r}: unknown key {key!r}")
            values[key] = cls.KEYS[key](value)
        return cls(name, arch, **values)


def run_variant(pack_path, variant: Variant, minutes: float, out_dir, workers: int,
                steps_per_epoch: int = 100, bf16: bool = True, seed: int = 42,
                deadline: float = math.inf, recalibration_crops: int = 0) -> dict:
    """Train one variant for ``minutes`` (after compiling); writes best_model.weights.h5
    (best validation NME, averaged weights), final_model.weights.h5 (the last averaged
    weights), both with their batch-norm statistics recalibrated, and history.csv,
    config.json, framing.json, log.txt and summary.json into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log_file = open(out_dir / "log.txt", "a")

    def log(message):
        line = f"[{variant.name} {time.strftime('%H:%M:%S')}] {message}"
        print(line, flush=True)
        log_file.write(line + "\n")
        log_file.flush()

    pack = load_pack(pack_path)
    config = replace(pack.config, arch=variant.arch, batch_size=variant.batch, lr=variant.lr,
                     image_dim=variant.dim or pack.config.image_dim,
                     loss="wing", lr_schedule="cosine", init_weights=variant.init,
                     mixed_precision=bf16, seed=seed, checkpoint_dir=str(out_dir))
    (out_dir / "config.json").write_text(config.to_json())
    (out_dir / "framing.json").write_text(json.dumps(framing_of(config), indent=2))

    import keras

    import dataset
    import distill
    import losses
    from model import build_network

    keras.utils.set_random_seed(seed)
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if bf16 else "float32")
    val = dataset.LandmarkDataset.from_items(pack.validation, config, training=False)
    val_x, val_y = val.arrays()
    model = build_network(variant.arch, config.image_dim)
    if variant.init:
        model.load_weights(variant.init)
    loss = losses.make_loss("wing", config.image_dim)
    teacher = None
    if variant.teacher:
        teacher = distill.Teacher(distill.parse_teachers(variant.teacher), config.image_dim)
        loss = losses.DistillationLoss(loss, variant.distill)
        log(f"{teacher.describe()}; its share of the loss: {variant.distill:g}")
    model.compile(optimizer=keras.optimizers.Adam(variant.lr, use_ema=True, ema_momentum=variant.ema),
                  loss=loss, metrics=[losses.nme],
                  jit_compile="auto")
    log(f"backend {keras.backend.backend()}, {model.name}: {model.count_params():,} parameters, "
        f"{len(pack.train)} train / {len(val)} validation faces, batch {variant.batch}, "
        f"peak lr {variant.lr:g}, {minutes:g} min, init {variant.init or 'random'}")
    if variant.init:
        log(f"validation NME of the initial weights: {model.evaluate(val_x, val_y, verbose=0)[1]:.5f}")
    budget = make_time_budget(60 * minutes, variant.lr, variant.warmup, log, deadline)
    history_csv = out_dir / "history.csv"
    callbacks = [
        budget,
        # Averaged weights for validation and for the checkpoints written at epoch end.
        keras.callbacks.SwapEMAWeights(swap_on_epoch=True),
        keras.callbacks.ModelCheckpoint(str(out_dir / "best_model.weights.h5"), monitor="val_nme",
                                        mode="min", save_best_only=True, save_weights_only=True),
        keras.callbacks.CSVLogger(str(history_csv)),
    ]
    stream = training_batches(pack_path, config, len(pack.train), variant.batch, workers, seed)
    if teacher is not None:
        stream = distill.with_teacher_arrays(stream, teacher)
    started = time.time()
    history = model.fit(stream, steps_per_epoch=steps_per_epoch, epochs=1_000_000,
                        validation_data=(val_x, val_y), validation_batch_size=len(val_x),
                        callbacks=callbacks, verbose=0)
    stream.close()
    # After fit, SwapEMAWeights has put the averaged weights in (its last epoch end).
    model.save_weights(str(out_dir / "final_model.weights.h5"))
    train_data = dataset.LandmarkDataset.from_items(pack.train, config, training=True, seed=seed + 1)
    crops = training_crops(train_data, recalibration_crops or RECALIBRATION_CROPS, seed)
    recalibrated = {}
    for name in ("best_model.weights.h5", "final_model.weights.h5"):
        network = finish_checkpoint(out_dir / name, variant.arch, config.image_dim, crops)
        recalibrated[name] = validation_nme(network, val_x, val_y)
        log(f"{name}: batch-norm statistics recalibrated, validation NME {recalibrated[name]:.5f}")
    val_nme = history.history.get("val_nme", [float("nan")])
    timed = budget.rate
    summary = {
        "variant": variant.name, "arch": variant.arch, "init": variant.init, "peak_lr": variant.lr,
        "batch": variant.batch, "epochs": len(val_nme), "steps": len(val_nme) * steps_per_epoch,
        "best_val_nme": float(np.nanmin(val_nme)), "best_epoch": int(np.nanargmin(val_nme)),
        "last_val_nme": float(val_nme[-1]), "last_train_nme": float(history.history["nme"][-1]),
        "best_val_nme_recalibrated": recalibrated["best_model.weights.h5"],
        "last_val_nme_recalibrated": recalibrated["final_model.weights.h5"],
        "wall_seconds": round(time.time() - started, 1), **timed,
        "images_per_second": round(timed.get("timed_steps", 0) * variant.batch
                                   / max(timed.get("timed_seconds", 0), 1e-9), 1),
        "backend": keras.backend.backend(), "device": describe_device(),
        "parameters": model.count_params(),
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    log(json.dumps(summary))
    return summary


RECALIBRATION_CROPS = 2048


def training_crops(data, count: int, seed: int) -> np.ndarray:
    """``count`` augmented training crops [N, D, D, 1] (draws of their own, by ``seed``)."""
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, len(data), count)
    return np.stack([data.sample(int(i), 1_000_000 + k)[0] for k, i in enumerate(indices)])


def recalibrate_batchnorm(model, crops: np.ndarray, batch_size: int = 64) -> None:
    """Set every BatchNormalization's moving mean and variance to the mean of its batch
    statistics over ``crops`` (forward passes in training mode; no weight changes): "precise
    BN". Averaged (EMA) weights need it, since the moving statistics were gathered under the
    raw weights: on a 6-minute run from scratch it took validation NME from 4.02 % to 3.76 %."""
    import keras

    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in norms]
    try:
        for k, start in enumerate(range(0, len(crops) - batch_size + 1, batch_size)):
            for layer in norms:
                layer.momentum = k / (k + 1)  # moving <- running mean over the k + 1 batches
            model(crops[start:start + batch_size], training=True)
    finally:
        for layer, momentum in zip(norms, momenta):
            layer.momentum = momentum


def finish_checkpoint(path: Path, arch: str, image_dim: int, crops: np.ndarray | None = None):
    """Rewrite a checkpoint of a compiled model as the float32 network's weights alone (a
    compiled model's save_weights also holds the optimizer's state: 3-4 x the size), with
    its batch-norm statistics recalibrated on ``crops`` when given. Returns the network."""
    import keras

    from model import build_network

    from callbacks import atomic_save

    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        network = build_network(arch, image_dim)
        network.load_weights(str(path))
        # The bare weights first: a run stopped while recalibrating still leaves a small file.
        atomic_save(path, network.save_weights)
        if crops is not None:
            recalibrate_batchnorm(network, crops)
            atomic_save(path, network.save_weights)
    finally:
        keras.mixed_precision.set_global_policy(policy)
    return network


def recalibrate_checkpoint(weights, arch: str, image_dim: int, data_dir, crops: int, out) -> dict:
    """``recalibrate_batchnorm`` on a checkpoint, with crops of the training faces of
    ``data_dir`` (train.py's split); validation NME before and after, on its held-out faces."""
    from model import build_network
    from train import prepare_data

    config = Config(data_dir=str(data_dir), image_dim=image_dim, arch=arch)
    train_data, val_data = prepare_data(config)
    val_x, val_y = val_data.arrays()
    network = build_network(arch, image_dim)
    network.load_weights(str(weights))
    before = validation_nme(network, val_x, val_y)
    recalibrate_batchnorm(network, training_crops(train_data, crops, config.seed))
    network.save_weights(str(out))
    return {"weights": str(weights), "out": str(out), "val_nme_before": round(before, 5),
            "val_nme_after": round(validation_nme(network, val_x, val_y), 5), "crops": crops}


def validation_nme(network, images: np.ndarray, targets: np.ndarray) -> float:
    """Mean NME (losses.nme, the metric training reports) of ``network`` on these arrays."""
    import losses

    return float(np.mean(np.asarray(losses.nme(targets, network.predict(images, verbose=0)))))


def describe_device() -> str:
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return ", ".join(d.device_kind for d in jax.devices())
    if keras.backend.backend() == "torch":
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return keras.backend.backend()


# ---------------------------------------------------------------------------------------
# A session: several runs side by side, their results in one folder
# ---------------------------------------------------------------------------------------

def session(pack_path, variants: list[Variant], minutes: float, out_dir, workers: int,
            steps_per_epoch: int, bf16: bool, work_dir, slack_s: float = DEADLINE_SLACK_S) -> int:
    """Run every variant at once (one process each, sharing the GPU and the CPU cores) in
    ``work_dir/<name>``, then put each run's folder in ``out_dir/<name>.tar.gz``. Returns the
    number of runs that failed."""
    out_dir, work = Path(out_dir), Path(work_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("KERAS_BACKEND", pick_backend())
    print(f"[session] backend {env['KERAS_BACKEND']}, {len(variants)} runs of {minutes:g} min", flush=True)
    # Several JAX processes on one GPU: none may take most of its memory up front.
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    # Compiling is not part of a run's minutes, but the whole session must end in time.
    deadline = time.time() + 60 * minutes + slack_s
    processes = {}
    for variant in variants:
        command = [sys.executable, __file__, "run", "--pack", str(pack_path),
                   "--variant", variant_text(variant), "--minutes", str(minutes),
                   "--deadline", str(deadline),
                   "--out", str(work / variant.name), "--workers", str(workers),
                   "--steps-per-epoch", str(steps_per_epoch)] + ([] if bf16 else ["--no-bf16"])
        processes[variant.name] = subprocess.Popen(command, env=env)
    failed = 0
    for name, process in processes.items():
        if wait_or_stop(process, deadline + FINISH_S) != 0:
            print(f"[session] {name} exited with {process.returncode}", flush=True)
            failed += 1
        with tarfile.open(out_dir / f"{name}.tar.gz", "w:gz") as archive:
            archive.add(work / name, arcname=name)
        print(f"[session] {out_dir / f'{name}.tar.gz'}: "
              f"{(out_dir / f'{name}.tar.gz').stat().st_size / 1e6:.1f} MB", flush=True)
    return failed


def wait_or_stop(process: subprocess.Popen, stop_at: float) -> int:
    """Wait for ``process`` until ``time.time()`` reaches ``stop_at``, then terminate it (a
    run that overstays would otherwise take the whole session's results with it: the
    checkpoints it has written so far are still archived). Returns its exit code."""
    try:
        return process.wait(timeout=max(0.0, stop_at - time.time()))
    except subprocess.TimeoutExpired:
        print(f"[session] pid {process.pid} still running at its deadline: stopped", flush=True)
        process.terminate()
        try:
            return process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()


def pick_backend() -> str:
    """jax when JAX sees a GPU, else torch when PyTorch does, else jax (CPU)."""
    probes = {"jax": "import jax; assert any(d.platform == 'gpu' for d in jax.devices())",
              "torch": "import torch; assert torch.cuda.is_available()"}
    for name, probe in probes.items():
        if subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0:
            return name
    return "jax"


def variant_text(variant: Variant) -> str:
    text = (f"{variant.name}:{variant.arch}:lr={variant.lr:g}:warmup={variant.warmup:g}"
            f":batch={variant.batch}:dim={variant.dim}:ema={variant.ema:g}")
    text += f":init={variant.init}" if variant.init else ""
    return text + (f":teacher={variant.teacher}:distill={variant.distill:g}" if variant.teacher else "")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    pack = commands.add_parser("pack", help="write the training faces to one .npz")
    pack.add_argument("--data-dir", default=Config.data_dir)
    pack.add_argument("--out", required=True)
    pack.add_argument("--val-fraction", type=float, default=Config.val_fraction)
    pack.add_argument("--seed", type=int, default=Config.seed)
    pack.add_argument("--quality", type=int, default=JPEG_QUALITY, help="JPEG quality of the regions")
    for name in ("run", "session"):
        sub = commands.add_parser(name, help="train one variant" if name == "run"
                                  else "train several variants at once, archive each")
        sub.add_argument("--pack", required=True)
        sub.add_argument("--variant", action="append", required=True, type=Variant.parse,
                         help="name:arch[:init=WEIGHTS][:lr=PEAK][:warmup=FRACTION][:batch=N]")
        sub.add_argument("--minutes", type=float, required=True, help="training time of each run")
        sub.add_argument("--out", required=True, help="the run's folder (run) or where the "
                         "archives go (session)")
        if name == "session":
            sub.add_argument("--work-dir", default="runs/packed", help="the runs' folders")
            sub.add_argument("--slack", type=float, default=DEADLINE_SLACK_S,
                             help="seconds past --minutes (for compiling) after which every run stops")
        sub.add_argument("--workers", type=int, default=4, help="augmentation processes per run")
        sub.add_argument("--steps-per-epoch", type=int, default=100)
        sub.add_argument("--deadline", type=float, default=math.inf,
                         help="stop at this time.time() whatever the schedule says")
        sub.add_argument("--no-bf16", dest="bf16", action="store_false",
                         help="train in float32 (default: bfloat16 compute, float32 weights)")
    recal = commands.add_parser("recalibrate", help="recalibrate a checkpoint's batch-norm "
                                "statistics on augmented training crops of the real data")
    recal.add_argument("weights", help="a .weights.h5 of --arch")
    recal.add_argument("--arch", required=True)
    recal.add_argument("--image-dim", type=int, default=Config.image_dim)
    recal.add_argument("--data-dir", default=Config.data_dir)
    recal.add_argument("--crops", type=int, default=RECALIBRATION_CROPS)
    recal.add_argument("--out", required=True, help="where the recalibrated weights go")
    args = parser.parse_args(argv)
    if args.command == "recalibrate":
        print(json.dumps(recalibrate_checkpoint(args.weights, args.arch, args.image_dim,
                                                args.data_dir, args.crops, args.out)))
        return 0
    if args.command == "pack":
        config = Config(data_dir=args.data_dir, val_fraction=args.val_fraction, seed=args.seed)
        print(json.dumps(pack_faces(config, args.out, args.quality)))
        return 0
    if args.command == "run":
        if len(args.variant) != 1:
            parser.error("run takes one --variant; session runs several")
        run_variant(args.pack, args.variant[0], args.minutes, args.out, args.workers,
                    args.steps_per_epoch, args.bf16, deadline=args.deadline)
        return 0
    return session(args.pack, args.variant, args.minutes, args.out, args.workers,
                   args.steps_per_epoch, args.bf16, args.work_dir, args.slack)


if __name__ == "__main__":
    sys.exit(main())
