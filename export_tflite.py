"""Convert a trained checkpoint to TFLite for the Raspberry Pi, and check the result.

    python export_tflite.py                                   # checkpoints/best_model_full.h5 -> models/, all formats
    python export_tflite.py --model runs/x/best_model_full.h5 --quantize int8 --int8-input float

Formats: ``float32``; ``float16`` (weights in float16); ``dynamic`` (int8 weights, float
activations); ``int8`` (full integer, calibrated on real training crops). Beside each
``landmarks_<format>.tflite`` goes ``landmarks_<format>.json``: the framing predict.py needs
to crop a face the way training did. After converting, the Keras and TFLite models run on
the same held-out crops; a format whose NME differs from the Keras model's by more than
its tolerance (worse, or better: either way not the same model) fails the run. The files are
written under temporary names and moved into ``--out-dir`` only when every format passes:
a failed export leaves the models already there as they were.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import geometry

FORMATS = ("float32", "float16", "dynamic", "int8")
# Largest allowed rise of NME (fraction of the inter-ocular distance) over the Keras model.
TOLERANCE = {"float32": 0.0005, "float16": 0.001, "dynamic": 0.0015, "int8": 0.0015}
# Largest allowed mean absolute difference of the per-point confidences (in [0, 1]).
CONFIDENCE_TOLERANCE = {"float32": 0.002, "float16": 0.01, "dynamic": 0.03, "int8": 0.03}


def load_keras_checkpoint(path: Path):
    from evaluate import KerasLandmarks

    return KerasLandmarks(path)


def training_config(model_path: Path):
    from config import Config

    config_file = model_path.parent / "config.json"
    return Config.from_json_file(config_file) if config_file.exists() else None


def held_out_faces(data_dir: Path, config):
    """(calibration faces from the training part, parity faces held out from it)."""
    import dataset

    faces = dataset.load_faces(data_dir, "train", config.split if config else "standard")
    seed = config.seed if config else 42
    fraction = config.val_fraction if config and config.val_fraction > 0 else 0.05
    train, held = dataset.split_by_image(faces, fraction, seed)
    rng = np.random.default_rng(seed)
    return [train[i] for i in rng.permutation(len(train))], held


# Ops kept in float inside the int8 model: the soft-argmax (softmax over each heatmap and
# the weighted sum of cell centres, with the expected offsets of `mobile-wide-nrm` and their
# neighbour averaging) and the confidence read from the same maps. In int8 its
# probabilities are quantised to 1/256 and the coordinates drift by about a pixel (+1 NME
# point); in float the drift is ~0.1 px.
FLOAT_OPS_IN_INT8 = ["SOFTMAX", "TRANSPOSE", "RESHAPE", "FULLY_CONNECTED", "BATCH_MATMUL",
                     "CONCATENATION", "GATHER", "MUL", "SUB", "SUM", "SQUARE", "SQRT", "MAXIMUM", "DIV", "LOGISTIC"]


def export_network(keras_model, calibration_crops: np.ndarray):
    """The network to convert: with a second output, each landmark's confidence, when the
    network has heatmaps (`mobile`); the reference spreads are measured on training crops."""
    import keras

    from model import heatmap_spread, with_confidence

    try:
        heatmaps = keras_model.get_layer("heatmaps").output
    except ValueError:
        return keras_model, None
    probe = keras.Model(keras_model.input, heatmaps)
    spreads = np.asarray(heatmap_spread(probe.predict(calibration_crops, batch_size=64, verbose=0)))
    reference = np.median(spreads, axis=0)
    return with_confidence(keras_model, reference), reference


def convert(keras_model, fmt: str, calibration: np.ndarray | None, int8_input: str = "int8") -> bytes:
    """One TFLite flatbuffer of `keras_model` in format `fmt`."""
    import contextlib
    import io
    import warnings

    # Keras prints the whole SavedModel signature while converting; the converter warns that
    # the int8 input has no statistics (it needs none: grey pixels fit int8 exactly) and its
    # quantisation debugger uses TensorFlow's deprecated interpreter.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(Statistics for quantized inputs|tf.lite.Interpreter is deprecated)")
        return _convert(keras_model, fmt, calibration, int8_input)


def _convert(keras_model, fmt, calibration, int8_input) -> bytes:
    import tensorflow as tf

    # from_keras_model freezes the weights into constants (from_concrete_functions would
    # keep Keras 3 variables as uninitialised TFLite resource variables).
    converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    if fmt == "float32":
        return converter.convert()
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if fmt == "float16":
        converter.target_spec.supported_types = [tf.float16]
        return converter.convert()
    if fmt == "dynamic":
        return converter.convert()
    if fmt != "int8":
        raise ValueError(f"unknown format {fmt!r}")
    # Full integer: calibrated on real crops, the soft-argmax left in float (selective
    # quantisation through TFLite's quantisation debugger), then the input made int8.
    from tensorflow.lite.python import util

    converter.representative_dataset = lambda: ([crop[None]] for crop in calibration)
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=FLOAT_OPS_IN_INT8)
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=converter.representative_dataset, debug_options=options)
    flatbuffer = debugger.get_nondebug_quantized_model()
    if int8_input == "int8":
        flatbuffer = util.modify_model_io_type(flatbuffer, inference_input_type=tf.int8,
                                               inference_output_type=tf.float32)
    return flatbuffer


def latency_ms(model_path: Path, threads: int, runs: int = 50) -> float:
    from predict import LandmarkModel

    runtime = LandmarkModel(model_path, threads=threads)
    crop = np.zeros((runtime.image_dim, runtime.image_dim, 1), np.float32)
    for _ in range(5):
        runtime.run(crop)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        runtime.run(crop)
        times.append(1000 * (time.perf_counter() - started))
    return statistics.median(times)


def crop_nme(pred_norm: np.ndarray, truth_norm: np.ndarray) -> float:
    from evaluate import nme

    return float(nme(pred_norm, truth_norm).mean())


def model_name(text: str) -> str:
    """--name: a plain file-name prefix (no folder, not hidden)."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", text):
        raise argparse.ArgumentTypeError(f"wants a file-name prefix of letters, digits, '.', '_' or "
                                         f"'-' (no folder), got {text!r}")
    return text


def main(argv=None) -> int:
    from predict import positive_int

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--model", default="checkpoints/best_model_full.h5",
                        help="Keras checkpoint (.h5 or .weights.h5 with config.json beside it)")
    parser.add_argument("--out-dir", default="models")
    parser.add_argument("--name", type=model_name, default="landmarks", help="file prefix: <name>_<format>.tflite")
    parser.add_argument("--quantize", choices=FORMATS + ("all",), default="all")
    parser.add_argument("--int8-input", choices=("int8", "float"), default="int8",
                        help="input type of the full-integer model (grey pixels fit int8 exactly); "
                        "its output stays float32: int8 coordinates alone would cost ~0.3 NME points")
    parser.add_argument("--data-dir", help="training data for calibration and the parity check "
                        "(default: the data_dir in config.json beside the checkpoint)")
    parser.add_argument("--calibration-faces", type=positive_int, default=300)
    parser.add_argument("--parity-faces", type=positive_int, default=100)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from train import quiet_tensorflow_startup

    quiet_tensorflow_startup()  # before Keras brings TensorFlow in with its start-up notes
    from predict import InputError, make_output_folder

    model_path = Path(args.model)
    if not model_path.is_file():
        print(f"error: {model_path}: no such checkpoint file", file=sys.stderr)
        return 2
    out_dir = Path(args.out_dir)
    try:
        make_output_folder(out_dir, "--out-dir")
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not os.access(out_dir, os.W_OK):
        print(f"error: --out-dir {out_dir}: not writable", file=sys.stderr)
        return 2
    import callbacks

    try:
        # A second export into the same folder is refused, instead of removing this one's
        # pending files when it starts.
        with callbacks.directory_lock(out_dir):
            return export(args, model_path, out_dir)
    except callbacks.DirectoryBusy as err:
        print(f"error: --out-dir {err}; wait until it is done, or export elsewhere", file=sys.stderr)
        return 2


def export(args, model_path: Path, out_dir: Path) -> int:
    """main's work, with --out-dir locked: convert, check, and move the files into place."""
    import dataset

    try:
        checkpoint = load_keras_checkpoint(model_path)
    except (OSError, ValueError) as err:
        print(f"error: {model_path}: cannot load the Keras checkpoint ({err})", file=sys.stderr)
        return 2
    config = training_config(model_path)
    data_dir = Path(args.data_dir or (config.data_dir if config else ""))
    if not dataset.has_dataset(data_dir):
        print(f"error: {data_dir}: no training data for calibration and parity; pass --data-dir",
              file=sys.stderr)
        return 2
    import callbacks
    from evaluate import TFLiteLandmarks, frame_faces
    from predict import InputError

    callbacks.recover_directory(out_dir)  # temporaries of an export that was killed

    framing = checkpoint.framing
    dim = int(framing["image_dim"])
    calib_faces, parity_faces = held_out_faces(data_dir, config)
    parity_crops, matrices, kept, _ = frame_faces(parity_faces[:args.parity_faces], framing)
    parity_truth = np.stack([geometry.px_to_norm(geometry.transform_points(face.landmarks_px, matrix), dim)
                             for face, matrix in zip(kept, matrices)])
    calibration = frame_faces(calib_faces[:args.calibration_faces], framing)[0]
    network, reference_spread = export_network(checkpoint.model, calibration)
    keras_outputs = network.predict(parity_crops, batch_size=64, verbose=0)
    keras_points, keras_confidence = ((keras_outputs[0], keras_outputs[1]) if reference_spread is not None
                                      else (keras_outputs, None))
    keras_nme = crop_nme(keras_points.reshape(len(parity_crops), -1, 2), parity_truth)
    print(f"Keras {model_path.name}: NME {100 * keras_nme:.3f} % on {len(parity_crops)} held-out faces"
          + ("" if keras_confidence is None else
             f", face score {keras_confidence.mean(axis=1).mean():.3f} (mean)"))

    formats = FORMATS if args.quantize == "all" else (args.quantize,)
    failed, written = [], []
    print(f"{'format':<9}{'size KB':>9}{'NME %':>8}{'drift':>8}{'tol':>7}{'conf d':>8}{'tol':>6}"
          f"{'1 thr ms':>10}{'4 thr ms':>10}")
    for fmt in formats:
        names = [f"{args.name}_{fmt}.tflite", f"{args.name}_{fmt}.json"]
        tflite_path = callbacks.pending_path(out_dir, names[0])  # moved into place if all pass
        flatbuffer = convert(network, fmt, calibration, args.int8_input)
        metadata = {
            "format": fmt, "input_type": args.int8_input if fmt == "int8" else "float32",
            "output_type": "float32",
            "framing": framing, "source_checkpoint": model_path.name,
            "arch": config.arch if config else None,
            "output": "136 values: x0, y0, x1, y1, ... in [-0.5, 0.5] crop coordinates",
        }
        if reference_spread is not None:
            metadata["confidence_output"] = (
                "68 values in [0, 1]: each landmark's heatmap spread against its median spread on "
                "training crops (model.HeatmapConfidence); the face score is their mean")
            metadata["reference_spread"] = [round(float(v), 6) for v in reference_spread]
        try:
            written += callbacks.write_pending(out_dir, {
                names[0]: lambda p: Path(p).write_bytes(flatbuffer),
                names[1]: lambda p: Path(p).write_text(json.dumps(metadata, indent=1))})
        except OSError as err:
            callbacks.discard_pending(out_dir, written)
            print(f"error: --out-dir {out_dir}: cannot write {names[0]} ({err.strerror}); "
                  f"nothing in {out_dir} was replaced", file=sys.stderr)
            return 2
        try:
            lite_points, lite_confidence = TFLiteLandmarks(tflite_path).predict_crops_with_confidence(
                parity_crops)
        except InputError as err:  # e.g. non-finite output
            lite_nme, lite_confidence, fault = math.nan, None, str(err).split(": ", 1)[-1]
        else:
            lite_nme, fault = crop_nme(lite_points, parity_truth), None
        drift = lite_nme - keras_nme
        ok = within_tolerance(drift, TOLERANCE[fmt])
        fault = fault or (None if ok else "NME differs from Keras by more than the tolerance")
        conf_text = f"{'-':>8}{'-':>6}"
        if keras_confidence is not None:
            if lite_confidence is None:
                conf_drift, ok = float("inf"), False
            else:
                conf_drift = float(np.abs(lite_confidence - keras_confidence).mean())
                ok = ok and conf_drift <= CONFIDENCE_TOLERANCE[fmt]
            fault = fault or (None if ok else "confidence differs from Keras by more than the tolerance")
            conf_text = f"{conf_drift:>8.4f}{CONFIDENCE_TOLERANCE[fmt]:>6.3f}"
        latency = (f"{latency_ms(tflite_path, 1):>10.2f}{latency_ms(tflite_path, 4):>10.2f}" if ok
                   else f"{'-':>10}{'-':>10}")
        print(f"{fmt:<9}{len(flatbuffer) / 1024:>9.1f}{100 * lite_nme:>8.3f}{100 * drift:>+8.3f}"
              f"{100 * TOLERANCE[fmt]:>7.2f}{conf_text}{latency}" + ("" if ok else f"   FAILED: {fault}"))
        if not ok:
            failed.append(fmt)
    print("NME and drift in % of the outer-eye-corner distance; conf d: mean |confidence - Keras'|; "
          "latency: median of 50 runs, this machine")
    if failed:
        callbacks.discard_pending(out_dir, written)
        print(f"error: {', '.join(failed)} differ from the Keras model by more than the tolerance: "
              f"not fit to ship; nothing in {out_dir} was replaced", file=sys.stderr)
        return 1
    try:
        callbacks.commit_pending(out_dir, written)
    except OSError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {', '.join(written)} to {out_dir}")
    return 0


def within_tolerance(drift: float, tolerance: float) -> bool:
    """Whether a TFLite model's NME minus its Keras model's is within ``tolerance`` either
    way: a TFLite file much *better* than its Keras model is not that model either."""
    return abs(drift) <= tolerance


if __name__ == "__main__":
    sys.exit(main())
