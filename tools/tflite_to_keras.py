"""Rebuild a Keras checkpoint of a `mobile`-family network (`mobile`, `mobile-s4`,
`mobile-wide`) from a float32 TFLite export.

    python -m tools.tflite_to_keras models/landmarks_float32.tflite --out models/landmarks_mobile.weights.h5 \
        --data-dir ../shared/data/300w_subset

Why: the Keras weights behind the shipped TFLite models were not kept, and exporting a new
output (the per-point confidence) or fine-tuning needs them. The float32 converter folds each
BatchNormalization into the convolution before it (kernel scaled, a bias added); this undoes
the fold in a way that leaves the network's function unchanged:

- each convolution gets the folded kernel, and its BatchNormalization the folded bias as beta
  with an identity scale in inference mode;
- then, so that training mode (batch statistics) starts where inference is, each
  BatchNormalization's moving mean/variance are set to the statistics of its input over real
  training crops, with gamma = sqrt(var + eps) and beta = bias + mean. In inference
  (x - mean) / sqrt(var + eps) * gamma + beta = x + bias, exactly the folded layer.

The rebuilt model is checked against the TFLite file on real crops before it is saved.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

from config import Config, framing_of

LAYER_IN_NAME = re.compile(r"/(\w+?)_1/(convolution|depthwise)")


def tflite_conv_weights(tflite_path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{Keras layer name: (kernel as Keras wants it, bias)} for every convolution of the file."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(str(tflite_path),
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    names = {d["index"]: d["name"] for d in interpreter.get_tensor_details()}
    weights = {}
    for op in interpreter._get_ops_details():  # noqa: SLF001 - the runtime's only graph view
        if op["op_name"] not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            continue
        kernel_index, bias_index = int(op["inputs"][1]), int(op["inputs"][2])
        found = LAYER_IN_NAME.findall(names[kernel_index]) + LAYER_IN_NAME.findall(names[bias_index])
        if not found:
            raise ValueError(f"{tflite_path}: cannot tell which layer {names[kernel_index]!r} belongs to")
        layer = found[0][0]
        kernel = interpreter.get_tensor(kernel_index)
        bias = interpreter.get_tensor(bias_index)
        if kernel.dtype != np.float32 or bias.dtype != np.float32:
            raise ValueError(f"{tflite_path}: layer {layer!r} holds {kernel.dtype} weights; "
                             f"rebuild from the float32 export")
        # CONV_2D [out, kh, kw, in] -> [kh, kw, in, out]; DEPTHWISE [1, kh, kw, c] -> [kh, kw, c, 1]
        kernel = kernel.transpose(1, 2, 3, 0)
        if layer in weights:
            raise ValueError(f"{tflite_path}: two convolutions claim layer {layer!r}")
        weights[layer] = (kernel, bias)
    return weights


def rebuild(tflite_path: Path, image_dim: int, calibration: np.ndarray, arch: str = "mobile"):
    """The Keras model of ``arch`` whose inference matches `tflite_path`."""
    import keras

    from model import build_network

    model = build_network(arch, image_dim)
    folded = tflite_conv_weights(tflite_path)
    bn_after = {}  # conv layer -> the BatchNormalization that follows it
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            bn_after[layer._inbound_nodes[0].parent_nodes[0].operation.name] = layer
    convs = [layer for layer in model.layers
             if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))]
    if {c.name for c in convs} != set(folded):
        missing = {c.name for c in convs} ^ set(folded)
        raise ValueError(f"{tflite_path}: not a `{arch}` network of this version (layers differ: "
                         f"{sorted(missing)[:5]})")
    for conv in convs:
        kernel, bias = folded[conv.name]
        if conv.use_bias:
            conv.set_weights([kernel, bias])
            continue
        conv.set_weights([kernel])
        bn = bn_after[conv.name]
        eps = bn.epsilon
        ones = np.ones_like(bias)
        bn.set_weights([ones, bias, np.zeros_like(bias), ones * (1.0 - eps)])  # x -> x + bias
    # Moving statistics from real crops, the function kept (see the module docstring), all
    # layers in one pass: fixing one layer's statistics does not change what the next sees.
    pairs = [(conv, bn_after[conv.name]) for conv in convs if not conv.use_bias]
    probe = keras.Model(model.input, [conv.output for conv, _ in pairs])
    sums = [np.zeros(conv.output.shape[-1]) for conv, _ in pairs]
    squares = [np.zeros(conv.output.shape[-1]) for conv, _ in pairs]
    count = 0
    for start in range(0, len(calibration), 32):
        outputs = probe(calibration[start:start + 32], training=False)
        for i, activation in enumerate(outputs):
            activation = np.asarray(activation, dtype=np.float64)
            sums[i] += activation.sum(axis=(0, 1, 2))
            squares[i] += np.square(activation).sum(axis=(0, 1, 2))
        count += len(calibration[start:start + 32])
    for (conv, bn), total, total_sq in zip(pairs, sums, squares):
        values_per_channel = count * conv.output.shape[1] * conv.output.shape[2]
        mean = total / values_per_channel
        var = np.maximum(total_sq / values_per_channel - mean ** 2, 0.0)
        _, bias, _, _ = bn.get_weights()
        bn.set_weights([np.sqrt(var + bn.epsilon), bias + mean, mean, var])
    return model


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.tflite_to_keras",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("tflite", help="a float32 .tflite of a mobile-family network (export_tflite.py); "
                        "its architecture is read from the .json beside it")
    parser.add_argument("--out", required=True, help="where to write the .weights.h5")
    parser.add_argument("--data-dir", required=True, help="training data: crops for BN statistics")
    parser.add_argument("--faces", type=int, default=512)
    args = parser.parse_args(argv)

    import json

    import dataset
    from evaluate import TFLiteLandmarks, frame_faces

    tflite_path = Path(args.tflite)
    metadata = json.loads(tflite_path.with_suffix(".json").read_text())
    framing = metadata["framing"]
    config = Config(arch=metadata.get("arch") or "mobile", image_dim=int(framing["image_dim"]),
                    crop_margin=float(framing["crop_margin"]), crop_shift_y=float(framing["crop_shift_y"]))
    faces = dataset.load_faces(Path(args.data_dir), "train", "standard")
    rng = np.random.default_rng(0)
    chosen = [faces[i] for i in rng.permutation(len(faces))[:args.faces]]
    crops = frame_faces(chosen, framing_of(config))[0]
    model = rebuild(tflite_path, config.image_dim, crops, config.arch)
    keras_out = model.predict(crops[:128], verbose=0).reshape(-1, 68, 2)
    lite_out = TFLiteLandmarks(tflite_path).predict_crops(crops[:128])
    drift_px = float(np.abs(keras_out - lite_out).max()) * config.image_dim
    print(f"rebuilt {tflite_path.name}: max difference to the TFLite file {drift_px:.5f} px "
          f"over {len(keras_out)} crops")
    if drift_px > 0.01:
        print("error: the rebuilt model does not match; not saved", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save_weights(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
