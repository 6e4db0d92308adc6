"""Train the eye model (eyes.py): a second, higher-resolution look at each eye.

    python train_eyes.py --data-dir ../shared/data/300w_subset --out-dir runs/eyes
    cp runs/eyes/eyes.tflite runs/eyes/eyes.json models/   # what predict.py --refine-eyes uses

Each training face gives both eyes (the left one mirrored), each cut ``--jitters`` times from
the photo around its annotated points moved, scaled and turned at random, as a first pass's
points would be off, with brightness and contrast jitter. The held-out faces are train.py's
(same ``--seed`` and ``--val-fraction``): the best epoch on them is kept, exported to TFLite
(float32) and checked against the Keras model, and the eye points of the landmark model's
first pass (``--first-pass``) are scored with and without the eye model on those faces.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

import dataset
import eyes
import geometry

log = logging.getLogger("train_eyes")


def eye_samples(faces, rng, jitters: int = 1, augment: bool = True, sources=None):
    """(crops [N, D, D, 1] in [-1, 1], targets [N, 12] in [-0.5, 0.5]) for both eyes of each
    face: cut around ``sources`` (the points a first pass gave, [F, 68, 2]) or, by default,
    around the annotation moved by a random jitter."""
    crops, targets = [], []
    for index, face in enumerate(faces):
        image = dataset.read_image(face.image_path)
        around = face.landmarks_px if sources is None else sources[index]
        for indices, mirrored in eyes.EYES:
            for _ in range(jitters):
                jitter = ((rng.normal(0, 0.07, 2), rng.uniform(0.85, 1.15), rng.normal(0, 6.0))
                          if augment else None)
                crop, matrix = eyes.eye_crop(image, around[indices], mirrored, jitter)
                if augment:
                    crop = np.clip(crop * rng.uniform(0.7, 1.3) + rng.uniform(-40, 40), 0, 255).astype(np.uint8)
                crops.append(geometry.gray_to_input(crop))
                truth = geometry.transform_points(face.landmarks_px[indices], matrix)
                targets.append(geometry.px_to_norm(truth, eyes.EYE_DIM).ravel())
    return np.stack(crops).astype(np.float32), np.stack(targets).astype(np.float32)


def export_tflite(model, path: Path) -> None:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    tmp = path.with_suffix(".tflite.tmp")
    tmp.write_bytes(converter.convert())
    tmp.replace(path)


def eye_report(first_pass, refined, truths) -> dict:
    """Eye-point NME (% of the outer-eye-corner distance) and eye aspect ratios, first pass
    against refined, on all eyes and on the narrow ones (annotated EAR under 0.2)."""
    import evaluate
    import face_measures

    def ears(points):
        return np.stack([np.stack(face_measures.eye_aspect_ratios(p)) for p in points]).ravel()

    truth_ear = ears(truths)
    narrow = truth_ear < 0.2
    report = {"eyes": int(truth_ear.size), "narrow_eyes": int(narrow.sum()),
              "narrow_ear_annotated": float(truth_ear[narrow].mean()) if narrow.any() else None}
    for name, points in (("first_pass", first_pass), ("refined", refined)):
        errors = evaluate.point_errors(points, truths)[:, 36:48]
        ear = ears(points)
        report[name] = {"eye_nme": float(errors.mean()), "ear_mad": float(np.abs(ear - truth_ear).mean()),
                        "narrow_ear": float(ear[narrow].mean()) if narrow.any() else None,
                        "narrow_ear_mad": float(np.abs(ear - truth_ear)[narrow].mean()) if narrow.any() else None}
    return report


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--data-dir", required=True, help="a 300-W folder (dlib XML files or .pts)")
    parser.add_argument("--out-dir", default="runs/eyes", help="checkpoint, eyes.tflite and eyes.json go here")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--jitters", type=int, default=6, help="crops of each training eye per run")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.002, help="Adam, cosine to 0 over the run")
    parser.add_argument("--seed", type=int, default=42, help="train.py's --seed (the validation faces)")
    parser.add_argument("--val-fraction", type=float, default=0.05, help="train.py's --val-fraction")
    parser.add_argument("--first-pass", default=str(Path(__file__).resolve().parent / "models" / "landmarks_int8.tflite"),
                        help="the landmark model whose eye points are scored with and without the eye model")
    parser.add_argument("--max-faces", type=int, default=0, help="train on the first N faces only (0: all)")
    args = parser.parse_args(argv)
    for flag in ("epochs", "jitters", "batch_size"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1")
    if not 0 < args.val_fraction < 1:
        parser.error("--val-fraction must be between 0 and 1")
    if not args.lr > 0:
        parser.error("--lr must be positive")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import keras

    import evaluate
    import predict
    from model import build_eye_network

    try:
        faces = dataset.load_faces(args.data_dir, "train")
    except (dataset.DataError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    train_faces, val_faces = dataset.split_by_image(faces, args.val_fraction, args.seed)
    if args.max_faces:
        train_faces = train_faces[: args.max_faces]
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    started = time.time()
    x_train, y_train = eye_samples(train_faces, rng, args.jitters)
    x_val, y_val = eye_samples(val_faces, np.random.default_rng(args.seed + 1), 1)
    log.info("eye crops: %d training (%d faces x 2 eyes x %d), %d validation",
             len(x_train), len(train_faces), args.jitters, len(x_val))

    model = build_eye_network(eyes.EYE_DIM)
    steps = args.epochs * -(-len(x_train) // args.batch_size)
    model.compile(keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(args.lr, steps)), loss="mae")
    best_path = out_dir / "eyes_best.weights.h5"
    model.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.epochs, shuffle=True,
              validation_data=(x_val, y_val), verbose=2,
              callbacks=[keras.callbacks.ModelCheckpoint(str(best_path), monitor="val_loss",
                                                         save_best_only=True, save_weights_only=True)])
    model.load_weights(str(best_path))
    tflite_path = out_dir / "eyes.tflite"
    export_tflite(model, tflite_path)
    refiner = eyes.EyeRefiner(tflite_path)
    keras_out = model.predict(x_val[:64], verbose=0).reshape(-1, 6, 2)
    tflite_out = np.stack([refiner.run_crop(np.round((c[:, :, 0] + 1) * 127.5).astype(np.uint8))
                           for c in x_val[:64]])
    parity_px = float(np.abs(geometry.norm_to_px(keras_out, eyes.EYE_DIM) - tflite_out).max())

    first = predict.LandmarkModel(args.first_pass)
    first_pass = np.stack([first.predict_box(dataset.read_image(f.image_path), f.box_xywh) for f in val_faces])
    refined = np.stack([refiner.refine(dataset.read_image(f.image_path), p) for f, p in zip(val_faces, first_pass)])
    report = eye_report(first_pass, refined, np.stack([f.landmarks_px for f in val_faces]))
    report.update(train_faces=len(train_faces), val_faces=len(val_faces), epochs=args.epochs,
                  jitters=args.jitters, seed=args.seed, val_fraction=args.val_fraction,
                  first_pass_model=Path(args.first_pass).name, tflite_parity_px=parity_px,
                  seconds=round(time.time() - started, 1))
    eyes.write_metadata(tflite_path, validation=report)
    print(f"validation ({len(val_faces)} faces, first pass {Path(args.first_pass).name}): eye NME "
          f"{100 * report['first_pass']['eye_nme']:.2f} % -> {100 * report['refined']['eye_nme']:.2f} %; "
          f"EAR error {report['first_pass']['ear_mad']:.3f} -> {report['refined']['ear_mad']:.3f}")
    if report["narrow_eyes"]:
        print(f"narrow eyes ({report['narrow_eyes']}, annotated EAR {report['narrow_ear_annotated']:.3f}): "
              f"first pass {report['first_pass']['narrow_ear']:.3f}, refined {report['refined']['narrow_ear']:.3f}")
    print(f"TFLite against Keras: {parity_px:.4f} crop px at most; wrote {tflite_path} and its .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
