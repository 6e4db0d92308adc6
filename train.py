"""Train the 68-point landmark regressor.

    python train.py                       # the seed's defaults: Xception-like net, MSE, 30 epochs
    python train.py --arch mobile --loss wing --epochs 60
    python train.py --help                # every setting of config.py
    python train.py --strategy mirrored --mixed-precision   # every GPU of this machine
    TF_CONFIG=... python train.py --strategy multiworker     # on each machine; docs/distributed.md

A run that is killed resumes where it stopped when started again with the same
``--checkpoint-dir`` (Keras' BackupAndRestore); the best and final checkpoints are always
whole files.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

import distill
import distribute
from config import Config, framing_fault, framing_of

HELP = {
    "data_dir": "dlib's ibug_300W_large_face_landmark_dataset (XML) or a 300-W folder of "
                "images + .pts; downloaded with kagglehub when absent",
    "split": "'standard': re-split by path into the 300-W train/test parts; 'xml': use "
             "dlib's labels_ibug_300W_train/test.xml split as is (it leaks test images)",
    "val_fraction": "fraction of training images held out for validation (0 with --split xml "
                    "validates on labels_ibug_300W_test.xml)",
    "strict_data": "stop at the first unusable file instead of skipping it with a warning",
    "image_dim": "network input size in pixels (a multiple of 32)",
    "crop_margin": "crop side = max(box w, h) * (1 + 2 * margin)",
    "crop_shift_y": "crop centre moved down by this fraction of the crop side",
    "rotation_deg": "random rotation range, +/- degrees",
    "box_scale_jitter": "random crop scale range, +/- fraction",
    "box_shift_jitter": "random crop shift range, +/- fraction of the crop side",
    "flip_prob": "probability of a horizontal flip",
    "brightness": "brightness jitter strength", "contrast": "contrast jitter strength",
    "saturation": "saturation jitter strength (no effect on grey input)",
    "occlusion_prob": "probability of painting a random grey rectangle over the crop",
    "occlusion_size": "largest occluding rectangle side, as a fraction of the crop side",
    "blur_prob": "probability of a Gaussian blur", "blur_sigma": "largest blur sigma, crop pixels",
    "noise_std": "largest Gaussian pixel noise std (drawn per image), [0, 1] intensity units",
    "extra_train": "comma-separated dlib imglab XML files of more training faces (e.g. "
                   "teacher points for unannotated photos, from tools/mesh_teacher.py); "
                   "added to the training faces only, never to validation",
    "teacher": "knowledge distillation: ARCH=WEIGHTS[,ARCH=WEIGHTS...] of trained networks "
               "whose mean points (each also on the mirrored crop) are a second target",
    "distill_weight": "the teacher's share of the loss (the annotations' is 1 minus it)",
    "jaw_weight": "weight of the 17 jaw points in the loss against 1 for the others "
                  "(rescaled to average 1)",
    "arch": "network: xception (the seed's); mobile, mobile-s4 (32 x 32 heatmaps) or mobile-wide (1.5 x channels) for the Raspberry Pi",
    "loss": "training loss: mse (seed), l1 or wing",
    "batch_size": "images per training step on each replica (GPU): a step trains on "
                  "batch-size x replicas images", "epochs": "number of epochs",
    "lr": "Adam learning rate, used as given whatever the number of replicas (not scaled)",
    "lr_schedule": "constant or cosine (per step, down to 1%% of --lr by the last step)",
    "warmup_epochs": "raise the learning rate linearly from 1%% of --lr over this many epochs "
                     "(per step) before the schedule starts; use it to fine-tune",
    "ema": "validate and save a moving average of the weights with this momentum "
           "(e.g. 0.99; 0: off)",
    "steps_per_epoch": "cap an epoch at this many steps (0: one pass over the training set)",
    "seed": "random seed (data split, shuffling, augmentation, initial weights)",
    "checkpoint_dir": "where checkpoints, logs, history and plots are written",
    "download": "download the dataset with kagglehub when --data-dir holds none",
    "init_weights": "start from the weights of this checkpoint (same --arch) instead of random "
                    "ones, to fine-tune; a resumed run ignores it",
    "strategy": "default: one device; mirrored: every GPU of this machine; multiworker: the "
                "machines in TF_CONFIG (only the chief writes files)",
    "mixed_precision": "float16 compute with float32 variables, output and loss (GPU)",
    "jit": "compile the training step with XLA (one replica only: Keras cannot compile a "
           "step spread over several devices)",
}
CHOICES = {"split": ["standard", "xml"], "arch": ["xception", "mobile", "mobile-s4", "mobile-wide", "mobile-wide-nrm", "mobile-wide-s4"],
           "loss": ["mse", "l1", "wing"], "lr_schedule": ["constant", "cosine"],
           "strategy": list(distribute.STRATEGIES)}


def parse_args(argv=None) -> Config:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    defaults = Config()
    for field in dataclasses.fields(Config):
        flag = "--" + field.name.replace("_", "-")
        default = getattr(defaults, field.name)
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default,
                                help=HELP.get(field.name))
        else:
            parser.add_argument(flag, type=type(default), default=default,
                                choices=CHOICES.get(field.name), help=HELP.get(field.name))
    config = Config(**vars(parser.parse_args(argv)))
    if config.jaw_weight != 1.0 and config.loss != "wing":
        parser.error(f"--jaw-weight {config.jaw_weight:g} needs --loss wing, not --loss {config.loss}")
    if config.jaw_weight <= 0:
        parser.error(f"--jaw-weight must be positive, got {config.jaw_weight:g}")
    if not 0.0 <= config.distill_weight <= 1.0:
        parser.error(f"--distill-weight must be in [0, 1], got {config.distill_weight:g}")
    if not 0.0 <= config.ema < 1.0:
        parser.error(f"--ema must be in [0, 1), got {config.ema:g}")
    if config.warmup_epochs < 0 or config.warmup_epochs >= config.epochs:
        parser.error(f"--warmup-epochs must be at least 0 and less than --epochs "
                     f"({config.epochs}), got {config.warmup_epochs:g}")
    fault = range_fault(config)
    if fault:
        parser.error(fault)
    return config


def range_fault(config: Config) -> str | None:
    """The first flag whose value is out of range, as a message (None: all in range)."""
    fault = framing_fault(config.image_dim, config.crop_margin, config.crop_shift_y)
    if fault:
        name = fault.split()[0]
        return f"--{name.replace('_', '-')}{fault[len(name):]}"
    for flag, value, low in (("--batch-size", config.batch_size, 1), ("--epochs", config.epochs, 1),
                             ("--steps-per-epoch", config.steps_per_epoch, 0), ("--seed", config.seed, 0)):
        if value < low:
            return f"{flag} must be at least {low}, got {value}"
    if config.seed >= 2**32:
        return f"--seed must be less than 2**32, got {config.seed}"
    if not 0.0 <= config.val_fraction < 1.0:
        return f"--val-fraction must be in [0, 1), got {config.val_fraction:g}"
    if not (math.isfinite(config.lr) and config.lr >= 0):  # 0: nothing moves (a check)
        return f"--lr must be a finite number of at least 0, got {config.lr:g}"
    return None


def check_checkpoint_dir(config: Config) -> None:
    """Before anything is written: --checkpoint-dir must be a writable folder (or creatable),
    and a run that resumes its backup must build the network the backup holds."""
    import dataset

    folder = Path(config.checkpoint_dir)
    if folder.exists() and not folder.is_dir():
        raise dataset.DataError(f"--checkpoint-dir {folder}: is a file, not a folder")
    existing = next((p for p in [folder, *folder.parents] if p.exists()), Path("."))
    if not os.access(existing, os.W_OK | os.X_OK):
        raise dataset.DataError(f"--checkpoint-dir {folder}: {existing} is not writable")
    recorded = folder / "config.json"
    if not ((folder / "backup" / "training_metadata.json").exists() and recorded.is_file()):
        return
    try:
        before = Config.from_json_file(recorded)
    except (ValueError, TypeError) as err:
        raise dataset.DataError(f"{recorded}: unreadable ({err}); the backup beside it cannot be "
                                "resumed safely: use another --checkpoint-dir") from None
    for name in ("arch", "image_dim"):
        if getattr(before, name) != getattr(config, name):
            raise dataset.DataError(
                f"--checkpoint-dir {folder}: holds the backup of a run with --{name.replace('_', '-')} "
                f"{getattr(before, name)}, not {getattr(config, name)}; resume it with the same value, "
                "or train into another --checkpoint-dir")


def learning_rate(config: Config, steps_per_epoch: int):
    """Adam's learning rate: ``config.lr`` as a number (constant, no warm-up, as the seed),
    else a per-step Keras schedule: a linear warm-up from 1 % of ``lr`` over
    ``warmup_epochs``, then ``lr`` held (constant) or a cosine down to 1 % of it at the
    run's last step. It follows the optimizer's step count, which a resumed run restores."""
    import keras

    warmup_steps = round(config.warmup_epochs * steps_per_epoch)
    if config.lr_schedule == "constant" and not warmup_steps:
        return config.lr
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.01 * config.lr if warmup_steps else config.lr,
        decay_steps=max(config.epochs * steps_per_epoch - warmup_steps, 1),
        alpha=0.01 if config.lr_schedule == "cosine" else 1.0,
        warmup_target=config.lr if warmup_steps else None, warmup_steps=warmup_steps)


def prepare_data(config: Config):
    """(train LandmarkDataset, validation LandmarkDataset)."""
    import dataset

    data_dir = Path(config.data_dir)
    if not dataset.has_dataset(data_dir):
        if not config.download:
            raise dataset.DataError(f"{data_dir}: no dataset there (and --no-download)")
        data_dir = dataset.download_dataset(data_dir)
    if config.split == "xml" and config.val_fraction == 0:
        train_faces = dataset.load_faces(data_dir, "train", "xml")
        val_faces = dataset.load_faces(data_dir, "test", "xml")
        for faces, part in ((train_faces, "train"), (val_faces, "test")):
            if not faces:
                raise dataset.DataError(f"{data_dir / f'labels_ibug_300W_{part}.xml'}: lists no faces")
    else:
        faces = dataset.load_faces(data_dir, "train", config.split)
        if not faces:
            raise dataset.DataError(f"{data_dir}: no faces in the training part of the data "
                                    f"(--split {config.split}); its annotation files list none there")
        train_faces, val_faces = dataset.split_by_image(faces, config.val_fraction, config.seed)
    if not val_faces:
        raise dataset.DataError(f"no validation faces: --val-fraction {config.val_fraction:g} of "
                                f"{len(train_faces)} training faces holds none; raise it")
    if config.extra_train:
        extra = [face for path in config.extra_train.split(",") if path.strip()
                 for face in dataset.parse_dlib_xml(path.strip(), subset="extra")]
        if not extra:
            raise dataset.DataError(f"--extra-train {config.extra_train}: lists no faces")
        logging.info("extra training faces: %d from %s", len(extra), config.extra_train)
        train_faces = train_faces + extra
    logging.info("faces: %d train, %d validation", len(train_faces), len(val_faces))
    return (dataset.LandmarkDataset(train_faces, config, training=True),
            dataset.LandmarkDataset(val_faces, config, training=False))


def resume_epoch(backup_dir: Path) -> int:
    """The epoch a BackupAndRestore backup will resume at (0 when there is none)."""
    return resume_point(backup_dir)[0]


def resume_point(backup_dir: Path) -> tuple[int, int]:
    """(epoch, steps of it done) when a BackupAndRestore backup was taken; (0, 0) if none."""
    metadata = backup_dir / "training_metadata.json"
    if metadata.exists():
        recorded = json.loads(metadata.read_text())
        return int(recorded.get("epoch", 0)), int(recorded.get("batch", 0) or 0)
    return 0, 0


def resume_message(epoch: int, steps_done: int, steps: int, where) -> str:
    """What a resumed run will do, plainly: Keras restarts the interrupted epoch."""
    message = f"resuming at epoch {epoch + 1} from the backup in {where}"
    if steps_done:
        message += (f", taken after step {steps_done + 1} of {steps}; Keras starts every epoch at "
                    f"its first step, so all {steps} steps of epoch {epoch + 1} are trained again "
                    "from those weights (this run will not match an uninterrupted one step for step)")
    return message


def training_landmarks(train_data) -> np.ndarray:
    """[N, 136] the training faces' landmarks in the units of their (unjittered) crops, for
    quantities that depend only on the shape (differences between points)."""
    import geometry

    shapes = []
    for face in train_data.faces:
        centre, side = geometry.face_square(face.box_xywh, train_data.config.crop_margin,
                                            train_data.config.crop_shift_y)
        shapes.append(((face.landmarks_px - centre) / side).reshape(-1))
    return np.asarray(shapes, np.float32)


def load_initial_weights(model, config: Config, train_data) -> None:
    """--init-weights: the checkpoint's weights, layer by layer. A ``mobile-wide`` checkpoint
    also starts its variants (``mobile-wide-nrm``, ``mobile-wide-s4``): every layer but the
    ones the variant adds, which start as model.start_added_layers says."""
    import warnings

    import dataset
    from model import ADDED_TO_MOBILE_WIDE, start_added_layers

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Keras warns of what a failed load then explains
            model.load_weights(config.init_weights)
        logging.info("initial weights from %s", config.init_weights)
        return
    except (OSError, ValueError) as err:
        failure = dataset.DataError(f"{config.init_weights}: cannot load its weights into "
                                    f"--arch {config.arch} ({err})")
        if config.arch not in ADDED_TO_MOBILE_WIDE or isinstance(err, OSError):
            raise failure from None
    # A mobile-wide checkpoint: its layers copied by name (Keras loads a file by position).
    from model import build_network

    source = build_network("mobile-wide", config.image_dim)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            source.load_weights(config.init_weights)
    except ValueError:
        raise failure from None
    added = ADDED_TO_MOBILE_WIDE[config.arch]
    names = {layer.name for layer in source.layers}
    new = [layer.name for layer in model.layers if layer.weights and layer.name not in names]
    if sorted(new) != sorted(added):
        raise failure from None
    fresh = build_network(config.arch, config.image_dim)  # the added layers' own initialisation
    for layer in model.layers:
        if layer.weights:
            origin = source if layer.name in names else fresh
            layer.set_weights(origin.get_layer(layer.name).get_weights())
    logging.info("initial weights from %s, all but the layers --arch %s adds (%s): %s", config.init_weights,
                 config.arch, ", ".join(added), start_added_layers(model, config.arch, training_landmarks(train_data)))


def train(config: Config, strategy=None) -> dict:
    """Train as ``config`` says; returns a summary of the run, with the trained ``model``.

    ``strategy`` defaults to ``config.strategy``'s (distribute.py). Under several workers
    every one of them calls this; only the chief writes to ``config.checkpoint_dir``.
    """
    # First: the multi-worker runtime has to be set up before TensorFlow starts.
    strategy = strategy or distribute.make_strategy(config.strategy)
    import keras

    import callbacks
    import losses
    from model import build_network

    chief = distribute.is_chief(strategy)
    replicas = strategy.num_replicas_in_sync
    check_speed_flags(config, strategy)
    logging.info("%s", describe_devices(strategy, config.mixed_precision))
    keras.mixed_precision.set_global_policy("mixed_float16" if config.mixed_precision else "float32")
    keras.utils.set_random_seed(config.seed)
    checkpoint_dir = Path(config.checkpoint_dir)
    if chief:
        check_checkpoint_dir(config)

    teacher_specs = distill.parse_teachers(config.teacher) if config.teacher else []
    train_data, val_data = prepare_data(config)
    teacher = None
    if teacher_specs:
        teacher = distill.Teacher(teacher_specs, config.image_dim)
        logging.info("%s; its share of the loss: %g", teacher.describe(), config.distill_weight)
    global_batch = config.batch_size * replicas
    steps = config.steps_per_epoch or math.ceil(len(train_data) / global_batch)
    logging.info("%s: %d images per step (%d per replica), %d steps per epoch",
                 distribute.describe(strategy), global_batch, config.batch_size, steps)
    backup_dir = checkpoint_dir / "backup"
    resuming = (backup_dir / "training_metadata.json").exists()
    first_epoch = distribute.chief_value(strategy, resume_epoch(backup_dir) if chief else 0)
    if first_epoch or resuming:
        steps_done = resume_point(backup_dir)[1] if chief else 0
        logging.warning("%s", resume_message(first_epoch, steps_done, steps,
                                             backup_dir if chief else "the chief's checkpoint directory"))

    with strategy.scope():
        model = build_network(config.arch, config.image_dim)
        loss = losses.make_loss(config.loss, config.image_dim, config.jaw_weight)
        if teacher is not None:
            loss = losses.DistillationLoss(loss, config.distill_weight)
        optimizer = keras.optimizers.Adam(learning_rate(config, steps), use_ema=config.ema > 0,
                                          ema_momentum=config.ema or 0.99)
        model.compile(optimizer=optimizer, loss=loss,
                      metrics=[losses.nme],
                      # Without --jit, Keras' own choice ("auto": XLA on one GPU) stands,
                      # except over several replicas, where XLA cannot compile the step.
                      jit_compile=True if config.jit else ("auto" if replicas == 1 else False))
        if config.init_weights and not resuming:
            load_initial_weights(model, config, train_data)
        elif not resuming and config.arch == "mobile-wide-nrm":
            from model import start_added_layers

            logging.info("offsets head: %s", start_added_layers(model, config.arch, training_landmarks(train_data)))
    logging.info("%s: %d parameters", model.name, model.count_params())
    if chief:  # only now that data, flags, backup and weights are known to be usable
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        (checkpoint_dir / "config.json").write_text(config.to_json())
        (checkpoint_dir / "framing.json").write_text(json.dumps(framing_of(config), indent=2))

    history_csv = checkpoint_dir / "history.csv"
    # A fresh run in an old folder starts a new best; a resumed one keeps its own.
    best = callbacks.BestCheckpoint(checkpoint_dir, enabled=chief, resume=resuming)
    fit_callbacks = [
        # Saves weights every 50 steps and each epoch; restores them on restart.
        callbacks.BackupAndRestore(str(backup_dir), save_freq=min(50, steps),
                                   double_checkpoint=True),
    ] if chief else []
    if config.ema:
        # After the backup (raw weights) and before the best checkpoint: validation and every
        # checkpoint from here on see the averaged weights, and the run ends holding them.
        fit_callbacks.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
    fit_callbacks += [callbacks.StopOnNonFiniteValidation(), callbacks.KeepReplicasInStep(), best]
    if chief:
        fit_callbacks += [
            callbacks.LogLearningRate(),  # before the CSV logger, which writes what it adds
            keras.callbacks.CSVLogger(str(history_csv), append=first_epoch > 0),
            keras.callbacks.TensorBoard(log_dir=str(checkpoint_dir / "logs"), write_graph=False),
            callbacks.PlotHistory(history_csv, checkpoint_dir / "history.png"),
        ]

    # Each worker reads and warps only its own share of the training faces. Validation
    # batches are split over the replicas, and Keras sums the metrics' totals and counts
    # over them: val_nme is the mean over the validation faces, each counted once.
    def training_batches(num_shards, index):
        batches = train_data.tf_dataset(config.batch_size, repeat=True, first_epoch=first_epoch,
                                        shard=(num_shards, index))
        return batches if teacher is None else distill.with_teacher_targets(batches, teacher)

    train_stream = distribute.distribute_dataset(strategy, training_batches)
    val_stream = distribute.split_each_batch(val_data.tf_dataset(global_batch))
    started = time.time()
    # The chief's BackupAndRestore sets the epoch it resumes at; the others take the chief's.
    history = model.fit(train_stream, steps_per_epoch=steps, epochs=config.epochs,
                        initial_epoch=0 if chief else first_epoch, validation_data=val_stream,
                        callbacks=fit_callbacks, verbose=2,
                        shuffle=False)  # the training stream shuffles itself (dataset.py)
    if chief:
        callbacks.save_full_model(model, checkpoint_dir / callbacks.FINAL_FULL)
        logging.info("saved in %s: %s (the last epoch), %s and %s (the best), history.csv, "
                     "history.png, logs/", checkpoint_dir, callbacks.FINAL_FULL,
                     callbacks.BEST_FULL, callbacks.BEST_WEIGHTS)
    summary = {
        "epochs_run": len(history.history.get("loss", [])),
        "best_val_nme": best.best,
        "wall_seconds": round(time.time() - started, 1),
        "train_faces": len(train_data), "val_faces": len(val_data),
        "replicas": replicas, "global_batch_size": global_batch,
        "skipped": train_data.report.skipped + val_data.report.skipped,
    }
    logging.info("done: %s", json.dumps({k: v for k, v in summary.items() if k != "skipped"}))
    if summary["skipped"]:
        logging.warning("%d faces were skipped; see the warnings above", len(summary["skipped"]))
    return {**summary, "model": model}


def check_speed_flags(config: Config, strategy) -> None:
    """Refuse --jit where Keras cannot compile the step; warn about float16 on a CPU."""
    import tensorflow as tf

    if config.jit and strategy.num_replicas_in_sync > 1:
        raise distribute.StrategyError(
            f"--jit needs a single replica, not {strategy.num_replicas_in_sync}: Keras would "
            "compile the step of every device into one XLA program, which cannot reach the "
            "variables of the other devices")
    if config.mixed_precision and not tf.config.list_logical_devices("GPU"):
        logging.warning("--mixed-precision without a GPU: float16 runs, but slower than "
                        "float32 on a CPU")


def nvidia_driver_installed() -> bool:
    """Whether the NVIDIA driver library that TensorFlow's GPU support loads is present."""
    import ctypes

    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


# Notes TensorFlow's libraries print while they load, before its log level applies; the
# device line of describe_devices() says what they say.
STARTUP_NOTES = ("All log messages before absl::InitializeLog()", "oneDNN custom operations are on",
                 "Could not find cuda drivers on your machine")


def quiet_tensorflow_startup() -> None:
    """Import TensorFlow without its start-up notes. Its C++ log level (TF_CPP_MIN_LOG_LEVEL,
    when the user has not set it) hides its info lines and keeps its warnings, which say why a
    GPU cannot be used; on a machine with no NVIDIA driver it also hides the CUDA probe's
    errors ("failed call to cuInit"), which there only mean "no GPU". The notes printed while
    the libraries load ignore that level: they are caught on the way in, and anything else
    printed then is passed on. TensorFlow's Python logger keeps to warnings too (under a root
    logger at INFO it would report each SavedModel written to a temporary folder)."""
    import tempfile

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1" if nvidia_driver_installed() else "3")
    sys.stderr.flush()
    saved_stderr = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            os.dup2(saved_stderr, 2)
            os.close(saved_stderr)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines():
                if not any(note in line for note in STARTUP_NOTES):
                    print(line, file=sys.stderr)
    logging.getLogger("tensorflow").setLevel(logging.WARNING)


def describe_devices(strategy, mixed_precision: bool) -> str:
    """One line naming the devices this run trains on and its compute precision."""
    import tensorflow as tf

    precision = "mixed float16" if mixed_precision else "float32"
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        hint = (": an NVIDIA driver is installed, so install TensorFlow's GPU libraries "
                "(pip install -r requirements-gpu.txt)" if nvidia_driver_installed() else "")
        return f"devices: CPU, {os.cpu_count()} cores (TensorFlow sees no GPU{hint}); {precision}"
    try:
        local = [d.rsplit("device:", 1)[-1] for d in strategy.extended.worker_devices]
    except (RuntimeError, NotImplementedError, AttributeError):  # default strategy: on GPU:0
        local = ["GPU:0"]
    names = []
    for gpu in gpus:
        index = gpu.name.rsplit(":", 1)[-1]
        if f"GPU:{index}" not in local:
            continue
        details = tf.config.experimental.get_device_details(gpu)
        capability = details.get("compute_capability")
        names.append(f"GPU:{index} {details.get('device_name', 'GPU')}"
                     + (f" (compute capability {capability[0]}.{capability[1]})" if capability else ""))
    unused = len(gpus) - len(names)
    return (f"devices: {', '.join(names) or ', '.join(local)}"
            + (f" ({unused} more GPU{'s' if unused > 1 else ''} unused: --strategy mirrored uses every GPU)"
               if unused else "") + f"; {precision}")


def main(argv=None) -> int:
    quiet_tensorflow_startup()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = parse_args(argv)
    import dataset

    import callbacks

    try:
        train(config)
    except (dataset.DataError, distribute.StrategyError, distill.TeacherError) as err:
        logging.error("%s", err)
        return 2
    except callbacks.TrainingDiverged as err:
        logging.error("%s", err)
        return 1
    except OSError as err:  # a full disk or a folder gone read-only while saving
        logging.error("cannot write %s: %s; the last complete checkpoints in %s stand",
                      err.filename or "a checkpoint", err.strerror or err, config.checkpoint_dir)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
