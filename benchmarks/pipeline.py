"""How many training images per second each input pipeline delivers, on this machine.

    python -m benchmarks.pipeline                      # 300w_subset train split, batch 16
    python -m benchmarks.pipeline --batches 60 --json out/pipeline.json

Two pipelines over the same faces, each timed over ``--batches`` batches after
``--warmup`` batches:

- ``seed``: the seed project's approach, re-implemented faithfully: a Python generator that,
  one sample at a time, opens the full photo with PIL, crops around the face box with a
  margin, takes a random crop, rotates it (PIL, +/- 14 degrees), jitters brightness,
  contrast and saturation (PIL ImageEnhance), converts to grey, resizes to 128 and scales to
  [-1, 1], fed through ``tf.data.Dataset.from_generator`` and batched;
- ``ours``: ``LandmarkDataset(training=True).tf_dataset(batch, repeat=True)``. Its one-time
  cost (decoding every photo once and caching the region around each face) is measured
  and reported on its own.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.landmarks import describe_machine

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def default_data_dir() -> Path:
    root = os.environ.get("LANDMARKS_DATA")
    root = Path(root) if root else Path(__file__).resolve().parents[2] / "shared" / "data"
    return root / "300w_subset"


# ---------------------------------------------------------------------------------------
# The seed's pipeline
# ---------------------------------------------------------------------------------------

def seed_sample(face, rng: np.random.Generator, image_dim: int = 128, margin: float = 0.2,
                random_crop: float = 0.1, rotation_deg: float = 14.0, jitter: float = 0.3):
    """One training sample the seed's way: PIL operations on the full decoded photo."""
    from PIL import Image, ImageEnhance

    image = Image.open(face.image_path).convert("RGB")  # decoded again for every sample
    landmarks = face.landmarks_px.astype(np.float64).copy()
    # Crop around the face box, widened by the margin on every side.
    x, y, w, h = face.box_xywh
    pad_x, pad_y = margin * w, margin * h
    left, top = x - pad_x, y - pad_y
    crop_w, crop_h = w + 2 * pad_x, h + 2 * pad_y
    # Random crop: drop up to random_crop of the side, at a random place.
    keep_w = crop_w * (1 - rng.uniform(0, random_crop))
    keep_h = crop_h * (1 - rng.uniform(0, random_crop))
    left += rng.uniform(0, crop_w - keep_w)
    top += rng.uniform(0, crop_h - keep_h)
    box = tuple(int(round(v)) for v in (left, top, left + keep_w, top + keep_h))
    image = image.crop(box)
    landmarks -= box[:2]
    # Rotation about the crop centre (PIL: counter-clockwise, same canvas).
    angle = rng.uniform(-rotation_deg, rotation_deg)
    image = image.rotate(angle, resample=Image.BILINEAR)
    centre = np.array([(image.width - 1) / 2, (image.height - 1) / 2])
    theta = math.radians(angle)
    rotation = np.array([[math.cos(theta), math.sin(theta)], [-math.sin(theta), math.cos(theta)]])
    landmarks = (landmarks - centre) @ rotation.T + centre
    # Colour jitter.
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        image = enhancer(image).enhance(rng.uniform(1 - jitter, 1 + jitter))
    # Grey, resize, scale.
    scale = np.array([image_dim / image.width, image_dim / image.height])
    image = image.convert("L").resize((image_dim, image_dim), Image.BILINEAR)
    pixels = np.asarray(image, dtype=np.float32)[:, :, None] / 127.5 - 1.0
    landmarks_norm = (landmarks + 0.5) * scale / image_dim - 0.5
    return pixels, landmarks_norm.astype(np.float32).reshape(-1)


def seed_dataset(faces, batch_size: int, image_dim: int, seed: int):
    import tensorflow as tf

    def generate():
        rng = np.random.default_rng(seed)
        while True:
            for index in rng.permutation(len(faces)):
                yield seed_sample(faces[index], rng, image_dim)

    ds = tf.data.Dataset.from_generator(generate, output_signature=(
        tf.TensorSpec((image_dim, image_dim, 1), tf.float32), tf.TensorSpec((136,), tf.float32)))
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


# ---------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------

def images_per_second(ds, batch_size: int, batches: int, warmup: int) -> dict:
    iterator = iter(ds)
    started = time.perf_counter()
    for _ in range(warmup):
        next(iterator)
    warm = time.perf_counter()
    images = 0
    for _ in range(batches):
        image_batch, _ = next(iterator)
        images += int(image_batch.shape[0])
    elapsed = time.perf_counter() - warm
    assert images == batches * batch_size
    return {"images_per_second": images / elapsed, "seconds": elapsed, "images": images,
            "warmup_seconds": warm - started}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pipeline",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data-dir", default=str(default_data_dir()),
                        help="dataset folder (dlib XML or .pts); default $LANDMARKS_DATA/300w_subset")
    parser.add_argument("--split", default="train", help="which faces (dataset.load_faces)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=40, help="batches timed per pipeline")
    parser.add_argument("--warmup", type=int, default=5, help="batches run before timing")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="OUT", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    import tensorflow as tf

    import dataset
    from config import Config

    data_dir = Path(args.data_dir)
    if not dataset.has_dataset(data_dir):
        print(f"{data_dir}: no dataset there; pass --data-dir or set LANDMARKS_DATA", file=sys.stderr)
        return 2
    config = Config(batch_size=args.batch_size, seed=args.seed)
    faces = dataset.load_faces(data_dir, args.split)
    info = describe_machine()
    print(f"machine: {info}; TensorFlow {tf.__version__}")
    print(f"faces: {len(faces)} ({data_dir}, split {args.split}); batch {args.batch_size}, "
          f"{args.batches} batches timed after {args.warmup} warm-up")

    seed_timing = images_per_second(seed_dataset(faces, args.batch_size, config.image_dim, args.seed),
                                    args.batch_size, args.batches, args.warmup)
    print(f"seed (PIL, one image at a time, from_generator): "
          f"{seed_timing['images_per_second']:8.1f} images/s")

    started = time.perf_counter()
    ours = dataset.LandmarkDataset(faces, config, training=True)
    caching_seconds = time.perf_counter() - started
    cached_megabytes = sum(item.region.nbytes for item in ours.items) / 1e6
    ours_timing = images_per_second(ours.tf_dataset(args.batch_size, repeat=True),
                                    args.batch_size, args.batches, args.warmup)
    print(f"ours (cached regions, one warp, parallel map):    "
          f"{ours_timing['images_per_second']:8.1f} images/s")
    ratio = ours_timing["images_per_second"] / seed_timing["images_per_second"]
    print(f"ratio ours / seed: {ratio:.1f}x")
    print(f"ours, one-time decoding and caching of {len(ours)} faces: {caching_seconds:.1f} s "
          f"({len(ours) / caching_seconds:.0f} faces/s, {cached_megabytes:.0f} MB in memory)")

    if args.json:
        result = {
            "machine": info, "tensorflow": tf.__version__, "data_dir": str(data_dir),
            "split": args.split, "faces": len(faces), "batch_size": args.batch_size,
            "batches_timed": args.batches, "warmup_batches": args.warmup,
            "seed_pipeline": seed_timing, "our_pipeline": ours_timing,
            "ratio": ratio,
            "our_caching": {"seconds": caching_seconds, "faces": len(ours),
                            "megabytes": cached_megabytes},
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
