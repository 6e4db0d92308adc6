"""Train a part model (parts.py): a second, higher-resolution look at the eyes or the mouth.

    python train_parts.py --part eyes --data-dir ../shared/data/300w_subset --out-dir runs/eyes
    python train_parts.py --part eyes --data-dir ../shared/data/300w_subset --weights runs/eyes/eyes_best.weights.h5
    python train_parts.py --part mouth --data-dir ../shared/data/300w_subset --out-dir runs/mouth
    cp runs/eyes/eyes.tflite runs/eyes/eyes.json models/   # what predict.py --refine-eyes uses

Each training face gives its part (both eyes, the left one mirrored; or the mouth), cut
``--jitters`` times from the photo around its annotated points moved, scaled and turned at
random, as a first pass's points would be off, with brightness and contrast jitter (and, for
the mouth, mirrored half the time). The held-out faces are train.py's (same ``--seed`` and
``--val-fraction``): the best epoch on them is kept, exported to TFLite (int8 weights and
activations, calibrated on training crops; the soft-argmax and the float input stay float)
and checked against the Keras model, and the part's points of the landmark model's first pass
(``--first-pass``) are scored with and without the part model on those faces. ``--weights``
exports and scores weights already trained instead of training.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

import dataset
import parts
import geometry

log = logging.getLogger("train_parts")


def part_samples(part, faces, rng, jitters: int = 1, augment: bool = True):
    """(crops [N, D, D, 1] in [-1, 1], targets [N, 2P] in [-0.5, 0.5]) of a part of each face,
    cut around its annotation, moved by a random jitter when ``augment``."""
    crops, targets = [], []
    for face in faces:
        image = dataset.read_image(face.image_path)
        for indices, mirrored in part.groups:
            for _ in range(jitters):
                jitter = ((rng.normal(0, 0.07, 2), rng.uniform(0.85, 1.15), rng.normal(0, 6.0))
                          if augment else None)
                flip = bool(augment and part.flip_order is not None and rng.random() < 0.5)
                crop, matrix = parts.part_crop(part, image, face.landmarks_px[indices], mirrored, jitter, flip)
                if augment:
                    crop = np.clip(crop * rng.uniform(0.7, 1.3) + rng.uniform(-40, 40), 0, 255).astype(np.uint8)
                crops.append(geometry.gray_to_input(crop))
                truth = geometry.transform_points(face.landmarks_px[indices], matrix)
                if flip:
                    truth = truth[list(part.flip_order)]
                targets.append(geometry.px_to_norm(truth, part.dim).ravel())
    return np.stack(crops).astype(np.float32), np.stack(targets).astype(np.float32)


def export_tflite(model, path: Path, calibration: np.ndarray) -> None:
    """``model`` as a full-integer TFLite file at ``path``, calibrated on ``calibration``
    crops, with float input and output (export_tflite.convert): three times faster than float32
    for the same points."""
    import export_tflite as exporter

    tmp = path.with_suffix(".tflite.tmp")
    tmp.write_bytes(exporter.convert(model, "int8", calibration, int8_input="float"))
    tmp.replace(path)


def part_report(part, first_pass, refined, truths) -> dict:
    """The part's NME (% of the outer-eye-corner distance), first pass against refined, and
    its openness: for the eyes the eye aspect ratio (on all eyes and on the narrow ones,
    annotated EAR under 0.2), for the mouth the mouth aspect ratio."""
    import evaluate
    import face_measures

    def openness(points):
        if part is parts.EYES:
            return np.stack([np.stack(face_measures.eye_aspect_ratios(p)) for p in points]).ravel()
        return np.array([face_measures.mouth_aspect_ratio(p) for p in points], dtype=np.float64)

    indices = np.concatenate([group for group, _ in part.groups])
    truth_open = openness(truths)
    narrow = truth_open < 0.2 if part is parts.EYES else np.zeros(truth_open.shape, bool)
    report = {"part": part.name, "count": int(truth_open.size), "narrow_eyes": int(narrow.sum()),
              "narrow_ear_annotated": float(truth_open[narrow].mean()) if narrow.any() else None}
    for name, points in (("first_pass", first_pass), ("refined", refined)):
        value = openness(points)
        report[name] = {"nme": float(evaluate.point_errors(points, truths)[:, indices].mean()),
                        "openness_mad": float(np.abs(value - truth_open).mean()),
                        "narrow_ear": float(value[narrow].mean()) if narrow.any() else None,
                        "narrow_ear_mad": float(np.abs(value - truth_open)[narrow].mean()) if narrow.any() else None}
    return report


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--part", choices=sorted(parts.PARTS), default="eyes")
    parser.add_argument("--data-dir", required=True, help="a 300-W folder (dlib XML files or .pts)")
    parser.add_argument("--out-dir", help="checkpoint, PART.tflite and PART.json go here (default: runs/PART)")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--jitters", type=int, default=8, help="crops of each training eye or mouth")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.002, help="Adam, cosine to 0 over the run")
    parser.add_argument("--seed", type=int, default=42, help="train.py's --seed (the validation faces)")
    parser.add_argument("--val-fraction", type=float, default=0.05, help="train.py's --val-fraction")
    parser.add_argument("--first-pass", default=str(Path(__file__).resolve().parent / "models" / "landmarks_int8.tflite"),
                        help="the landmark model whose points of the part are scored with and without the part model")
    parser.add_argument("--max-faces", type=int, default=0, help="train on the first N faces only (0: all)")
    parser.add_argument("--weights", help="export and score these trained weights (a .weights.h5 of "
                        "this part's network) instead of training")
    args = parser.parse_args(argv)
    for flag in ("epochs", "jitters", "batch_size"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1")
    if not 0 < args.val_fraction < 1:
        parser.error("--val-fraction must be between 0 and 1")
    if not args.lr > 0:
        parser.error("--lr must be positive")
    if args.weights and not Path(args.weights).is_file():
        parser.error(f"--weights {args.weights}: no such file")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from train import quiet_tensorflow_startup

    quiet_tensorflow_startup()
    import keras

    import predict
    from model import build_part_network

    try:
        faces = dataset.load_faces(args.data_dir, "train")
    except (dataset.DataError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    train_faces, val_faces = dataset.split_by_image(faces, args.val_fraction, args.seed)
    if args.max_faces:
        train_faces = train_faces[: args.max_faces]
    part = parts.PARTS[args.part]
    out_dir = Path(args.out_dir or f"runs/{part.name}")
    out_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    started = time.time()
    x_train, y_train = part_samples(part, train_faces, rng, args.jitters)
    x_val, y_val = part_samples(part, val_faces, np.random.default_rng(args.seed + 1), 1)
    log.info("%s crops: %d training (%d faces x %d x %d), %d validation", part.name,
             len(x_train), len(train_faces), len(part.groups), args.jitters, len(x_val))

    model = build_part_network(part.dim, part.points, part.name)
    best_path = Path(args.weights) if args.weights else out_dir / f"{part.name}_best.weights.h5"
    if not args.weights:
        steps = args.epochs * -(-len(x_train) // args.batch_size)
        model.compile(keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(args.lr, steps)), loss="mae")
        model.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.epochs, shuffle=True,
                  validation_data=(x_val, y_val), verbose=2,
                  callbacks=[keras.callbacks.ModelCheckpoint(str(best_path), monitor="val_loss",
                                                             save_best_only=True, save_weights_only=True)])
    try:
        model.load_weights(str(best_path))
    except ValueError as err:
        print(f"error: {best_path}: not the {part.name} network's weights ({err})", file=sys.stderr)
        return 2
    tflite_path = out_dir / f"{part.name}.tflite"
    export_tflite(model, tflite_path, x_train[np.random.default_rng(args.seed).permutation(len(x_train))[:300]])
    refiner = parts.PartRefiner(part, tflite_path)
    keras_out = model.predict(x_val[:64], verbose=0).reshape(-1, part.points, 2)
    tflite_out = np.stack([refiner.run_crop(np.round((c[:, :, 0] + 1) * 127.5).astype(np.uint8))
                           for c in x_val[:64]])
    drift = np.linalg.norm(geometry.norm_to_px(keras_out, part.dim) - tflite_out, axis=-1)
    parity_px, parity_max_px = float(drift.mean()), float(drift.max())

    first = predict.LandmarkModel(args.first_pass)
    first_pass, refined = [], []
    for face in val_faces:
        image = dataset.read_image(face.image_path)
        first_pass.append(first.predict_box(image, face.box_xywh))
        refined.append(refiner.refine(image, first_pass[-1]))
    first_pass, refined = np.stack(first_pass), np.stack(refined)
    report = part_report(part, first_pass, refined, np.stack([f.landmarks_px for f in val_faces]))
    report.update(train_faces=len(train_faces), val_faces=len(val_faces), epochs=args.epochs,
                  format="int8", tflite_bytes=tflite_path.stat().st_size,
                  jitters=args.jitters, seed=args.seed, val_fraction=args.val_fraction,
                  first_pass_model=Path(args.first_pass).name, tflite_parity_px=parity_px,
                  tflite_parity_max_px=parity_max_px,
                  seconds=round(time.time() - started, 1))
    parts.write_metadata(part, tflite_path, validation=report)
    ratio = "EAR" if part is parts.EYES else "MAR"
    print(f"validation ({len(val_faces)} faces, first pass {Path(args.first_pass).name}): {part.name} NME "
          f"{100 * report['first_pass']['nme']:.2f} % -> {100 * report['refined']['nme']:.2f} %; "
          f"{ratio} error {report['first_pass']['openness_mad']:.3f} -> {report['refined']['openness_mad']:.3f}")
    if report["narrow_eyes"]:
        print(f"narrow eyes ({report['narrow_eyes']}, annotated EAR {report['narrow_ear_annotated']:.3f}): "
              f"first pass {report['first_pass']['narrow_ear']:.3f}, refined {report['refined']['narrow_ear']:.3f}")
    print(f"TFLite (int8) against Keras: points {parity_px:.3f} crop px apart on average, "
          f"{parity_max_px:.3f} at most; wrote {tflite_path} and its .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
