"""Train the 68-point landmark regressor.

    python train.py                       # the seed's defaults: Xception-like net, MSE, 30 epochs
    python train.py --arch mobile --loss wing --epochs 60
    python train.py --help                # every setting of config.py

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
import sys
import time
from pathlib import Path

from config import Config, framing_of

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
    "arch": "network: xception (the seed's) or mobile (Raspberry Pi)",
    "loss": "training loss: mse (seed), l1 or wing",
    "batch_size": "images per training step", "epochs": "number of epochs",
    "lr": "Adam learning rate", "lr_schedule": "constant or cosine (decay to 1%% by the last epoch)",
    "steps_per_epoch": "cap an epoch at this many steps (0: one pass over the training set)",
    "seed": "random seed (data split, shuffling, augmentation, initial weights)",
    "checkpoint_dir": "where checkpoints, logs, history and plots are written",
    "download": "download the dataset with kagglehub when --data-dir holds none",
}
CHOICES = {"split": ["standard", "xml"], "arch": ["xception", "mobile"],
           "loss": ["mse", "l1", "wing"], "lr_schedule": ["constant", "cosine"]}


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
    return Config(**vars(parser.parse_args(argv)))


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
    else:
        train_faces, val_faces = dataset.split_by_image(
            dataset.load_faces(data_dir, "train", config.split), config.val_fraction, config.seed)
    if not val_faces:
        raise dataset.DataError("no validation faces: raise --val-fraction")
    logging.info("faces: %d train, %d validation", len(train_faces), len(val_faces))
    return (dataset.LandmarkDataset(train_faces, config, training=True),
            dataset.LandmarkDataset(val_faces, config, training=False))


def resume_epoch(backup_dir: Path) -> int:
    """The epoch a BackupAndRestore backup will resume at (0 when there is none)."""
    metadata = backup_dir / "training_metadata.json"
    if metadata.exists():
        return int(json.loads(metadata.read_text()).get("epoch", 0))
    return 0


def train(config: Config, strategy=None) -> dict:
    import keras
    import tensorflow as tf

    import callbacks
    import losses
    from model import build_network

    keras.utils.set_random_seed(config.seed)
    checkpoint_dir = Path(config.checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    (checkpoint_dir / "config.json").write_text(config.to_json())
    (checkpoint_dir / "framing.json").write_text(json.dumps(framing_of(config), indent=2))

    train_data, val_data = prepare_data(config)
    steps = config.steps_per_epoch or math.ceil(len(train_data) / config.batch_size)
    backup_dir = checkpoint_dir / "backup"
    first_epoch = resume_epoch(backup_dir)
    if first_epoch:
        logging.info("resuming from the backup in %s at epoch %d", backup_dir, first_epoch + 1)

    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        model = build_network(config.arch, config.image_dim)
        model.compile(optimizer=keras.optimizers.Adam(config.lr),
                      loss=losses.make_loss(config.loss, config.image_dim),
                      metrics=[losses.nme])
    logging.info("%s: %d parameters", model.name, model.count_params())

    history_csv = checkpoint_dir / "history.csv"
    fit_callbacks = [
        # Saves weights, optimizer-free, every 50 steps and each epoch; restores on restart.
        keras.callbacks.BackupAndRestore(str(backup_dir), save_freq=min(50, steps),
                                         double_checkpoint=True),
        callbacks.BestCheckpoint(checkpoint_dir),
        keras.callbacks.CSVLogger(str(history_csv), append=first_epoch > 0),
        keras.callbacks.TensorBoard(log_dir=str(checkpoint_dir / "logs"), write_graph=False),
        callbacks.PlotHistory(history_csv, checkpoint_dir / "history.png"),
    ]
    if config.lr_schedule == "cosine":
        fit_callbacks.append(keras.callbacks.LearningRateScheduler(
            lambda epoch: config.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * epoch / config.epochs)))))

    started = time.time()
    history = model.fit(
        train_data.tf_dataset(config.batch_size, repeat=True, first_epoch=first_epoch),
        steps_per_epoch=steps, epochs=config.epochs,
        validation_data=val_data.tf_dataset(config.batch_size),
        callbacks=fit_callbacks, verbose=2)
    callbacks.save_full_model(model, checkpoint_dir / callbacks.FINAL_FULL)
    summary = {
        "epochs_run": len(history.history.get("loss", [])),
        "best_val_nme": fit_callbacks[1].best,
        "wall_seconds": round(time.time() - started, 1),
        "train_faces": len(train_data), "val_faces": len(val_data),
        "skipped": train_data.report.skipped + val_data.report.skipped,
    }
    logging.info("done: %s", json.dumps({k: v for k, v in summary.items() if k != "skipped"}))
    if summary["skipped"]:
        logging.warning("%d faces were skipped; see the warnings above", len(summary["skipped"]))
    return summary


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = parse_args(argv)
    import dataset

    try:
        train(config)
    except dataset.DataError as err:
        logging.error("%s", err)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
