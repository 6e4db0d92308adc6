"""Estimate the GPU memory a training step needs, and the largest batch that fits a card.

    python -m tools.gpu_memory                      # every architecture, 6 and 24 GB cards
    python -m tools.gpu_memory --arch xception --gpu-gb 8 --image-dim 160
    python -m tools.gpu_memory --json out/gpu_memory.json

An estimate from the Keras model alone, not a measurement: per image, every layer's output
is kept for the backward pass and its gradient takes as much again; the weights, their
gradients and Adam's two moments take four copies of the parameters (five with ``--ema``);
``--reserve-gb`` (1 GB) is left for the CUDA context, cuDNN's and XLA's workspaces and the
display. ``--mixed-precision`` stores the activations in float16. TensorFlow's allocator also
fragments memory, so the suggested batch is the largest power of two that fits with a margin
of a quarter of the card, and the recommended first try.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

GB = 1e9


def activation_elements(model) -> int:
    """Elements of every layer's output for one image, summed over the model's layers."""
    total = 0
    for layer in model.layers:
        outputs = layer.output if isinstance(layer.output, (list, tuple)) else [layer.output]
        for output in outputs:
            total += math.prod(int(d) for d in output.shape[1:])
    return total


def estimate(arch: str, image_dim: int, mixed_precision: bool, ema: bool) -> dict:
    """Bytes per image and fixed bytes of one training step of ``arch``."""
    from model import build_network

    network = build_network(arch, image_dim)
    parameters = network.count_params()
    elements = activation_elements(network)
    per_image = 2 * elements * (2 if mixed_precision else 4)  # outputs + their gradients
    fixed = (5 if ema else 4) * parameters * 4  # weights, gradients, Adam's m and v (+ EMA)
    return {"arch": arch, "image_dim": image_dim, "parameters": parameters,
            "activation_elements_per_image": elements, "bytes_per_image": per_image,
            "fixed_bytes": fixed}


def largest_batch(row: dict, gpu_gb: float, reserve_gb: float, margin: float = 0.25) -> dict:
    """The largest batch that fits ``gpu_gb`` by the estimate, and the power of two below it
    that leaves ``margin`` of the card free."""
    usable = gpu_gb * GB - reserve_gb * GB - row["fixed_bytes"]
    fits = max(int(usable // row["bytes_per_image"]), 0)
    safe = max(int((usable - margin * gpu_gb * GB) // row["bytes_per_image"]), 0)
    return {"fits": fits, "suggested": 2 ** int(math.log2(safe)) if safe >= 1 else 0}


def main(argv=None) -> int:
    from train import quiet_tensorflow_startup

    quiet_tensorflow_startup()
    from model import ARCHITECTURES

    parser = argparse.ArgumentParser(prog="python -m tools.gpu_memory",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 2)[2])
    parser.add_argument("--arch", nargs="+", default=list(ARCHITECTURES), choices=list(ARCHITECTURES))
    parser.add_argument("--image-dim", type=int, default=128, help="network input size in pixels")
    parser.add_argument("--gpu-gb", type=float, nargs="+", default=[6.0, 24.0],
                        help="card memory in GB (1e9 bytes)")
    parser.add_argument("--reserve-gb", type=float, default=1.0,
                        help="left for the CUDA context, cuDNN, XLA and the display")
    parser.add_argument("--mixed-precision", action="store_true", help="float16 activations")
    parser.add_argument("--ema", action="store_true", help="a moving average of the weights too")
    parser.add_argument("--json", type=Path, help="also write the table here")
    args = parser.parse_args(argv)
    if args.image_dim <= 0 or args.image_dim % 32:
        parser.error(f"--image-dim must be a positive multiple of 32, got {args.image_dim}")
    if any(gb <= args.reserve_gb for gb in args.gpu_gb):
        parser.error(f"--gpu-gb must each exceed --reserve-gb ({args.reserve_gb:g})")

    rows = []
    precision = "mixed float16" if args.mixed_precision else "float32"
    print(f"estimate, not a measurement: {args.image_dim}x{args.image_dim} input, {precision}, "
          f"Adam{' + EMA' if args.ema else ''}, {args.reserve_gb:g} GB reserved")
    header = f"{'arch':<15} {'parameters':>11} {'MB/image':>9} {'fixed MB':>9}"
    header += "".join(f"  {f'{gb:g} GB: fits / try':>20}" for gb in args.gpu_gb)
    print(header)
    for arch in args.arch:
        row = estimate(arch, args.image_dim, args.mixed_precision, args.ema)
        row["cards"] = {f"{gb:g}": largest_batch(row, gb, args.reserve_gb) for gb in args.gpu_gb}
        rows.append(row)
        line = (f"{arch:<15} {row['parameters']:>11,} {row['bytes_per_image'] / 1e6:>9.1f} "
                f"{row['fixed_bytes'] / 1e6:>9.0f}")
        for card in row["cards"].values():
            line += f"  {card['fits']:>11,} / {card['suggested']:>6,}"
        print(line)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"precision": precision, "reserve_gb": args.reserve_gb,
                                         "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
