"""Every setting of the project in one place.

`Config` holds plain values with the seed's defaults. `train.py` turns each field into a
command-line flag (``--image-dim``, ``--batch-size``...), so ``python train.py --help`` lists
them all. Modules never read settings from globals: they take a ``Config`` (or the few values
they need) as an argument.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

NUM_LANDMARKS = 68
# Outer eye corners of the 68-point scheme (0-based): the 300-W inter-ocular normaliser.
LEFT_EYE_OUTER, RIGHT_EYE_OUTER = 36, 45

KAGGLE_DATASET = "toxicloser/ibug-300w-large-face-landmark-dataset"
DLIB_ARCHIVE_NAME = "ibug_300W_large_face_landmark_dataset"


@dataclass
class Config:
    # --- data -------------------------------------------------------------------------
    data_dir: str = f"./{DLIB_ARCHIVE_NAME}"
    # "standard": re-split the archive by path into the 300-W train / Common / Challenging
    # parts; "xml": trust labels_ibug_300W_{train,test}.xml as they are (dlib's split, which
    # leaks test images into training).
    split: str = "standard"
    # Fraction of training images held out (grouped by image, chosen by `seed`) to validate
    # on each epoch. 0 validates on the XML test file instead (only with split="xml").
    val_fraction: float = 0.05
    strict_data: bool = False  # raise on the first bad file instead of skipping it
    # dlib imglab XML files of more training faces, e.g. a teacher's points for photos nobody
    # annotated (tools/mesh_teacher.py): added to the training faces, never validated on.
    extra_train: str = ""
    # --- framing (shared by training, evaluation and predict.py) ------------------------
    image_dim: int = 128
    # The crop is a square of side max(box w, h) * (1 + 2 * crop_margin), centred on the
    # face box shifted down by crop_shift_y * side (detector boxes sit high on the face).
    crop_margin: float = 0.2
    crop_shift_y: float = 0.06
    # --- augmentation (training only) ---------------------------------------------------
    rotation_deg: float = 14.0
    box_scale_jitter: float = 0.1  # side multiplied by U(1 - j, 1 + j)
    box_shift_jitter: float = 0.08  # centre moved by U(-j, j) * side on each axis
    flip_prob: float = 0.5
    brightness: float = 0.3  # additive, in [0, 1] intensity units: U(-b, b) * 0.5
    contrast: float = 0.3  # multiplicative around the mean: U(1 - c, 1 + c)
    saturation: float = 0.3  # colour inputs only; a no-op once converted to grey
    # Occlusion: with this probability a rectangle (each side U(0.1, occlusion_size) of the
    # crop) is painted one random grey level (hands, hair, glasses, microphones).
    occlusion_prob: float = 0.0
    occlusion_size: float = 0.4
    blur_prob: float = 0.0  # Gaussian blur with sigma U(0.5, blur_sigma) crop pixels
    blur_sigma: float = 1.5
    noise_std: float = 0.0  # Gaussian pixel noise, std U(0, noise_std) in [0, 1] intensity units
    # --- model and optimisation ---------------------------------------------------------
    arch: str = "xception"  # "xception" (the seed's network) or "mobile" (Raspberry Pi)
    loss: str = "mse"  # "mse" (seed), "l1", "wing"
    # The jaw's 17 points count this many times in the loss (the other 51 once); the weights
    # are scaled to average 1, so the loss keeps its size.
    jaw_weight: float = 1.0
    # Knowledge distillation (distill.py): "ARCH=WEIGHTS[,ARCH=WEIGHTS...]" names the frozen
    # teacher network(s) whose mean points (each also on the mirrored crop) are a second
    # target; distill_weight is the teacher's share of the loss.
    teacher: str = ""
    distill_weight: float = 0.5
    batch_size: int = 16
    epochs: int = 30
    lr: float = 0.00075
    lr_schedule: str = "constant"  # "constant" (seed) or "cosine"
    # Linear warm-up of the learning rate, per step, from 1 % of lr over this many epochs
    # (fractions allowed); 0: none (the seed). Fine-tunes need it: a restarted Adam at full
    # rate knocks a converged model off its minimum before it settles again.
    warmup_epochs: float = 0.0
    # Validate and checkpoint a moving average of the weights with this momentum (Adam's
    # use_ema; 0.99 averages over about the last 100 steps); 0: off (the seed).
    ema: float = 0.0
    steps_per_epoch: int = 0  # 0: one pass over the training set
    seed: int = 42
    # --- devices (distribute.py) --------------------------------------------------------
    # "default": one device; "mirrored": every GPU of this machine; "multiworker": the
    # machines listed in TF_CONFIG. batch_size is per replica: a step trains on
    # batch_size * replicas images. lr is used as given, not scaled with the replicas.
    strategy: str = "default"
    mixed_precision: bool = False  # float16 compute, float32 variables, output and loss
    jit: bool = False  # compile the train step with XLA (a single replica only)
    # --- output -------------------------------------------------------------------------
    checkpoint_dir: str = "./checkpoints"
    download: bool = True  # fetch the dlib archive with kagglehub when data_dir is empty
    init_weights: str = ""  # start from these weights (.weights.h5 or full .h5): fine-tuning

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json_file(cls, path: str | Path) -> "Config":
        values = json.loads(Path(path).read_text())
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


# Framing values a model can be trained with (train.py refuses others, predict.py refuses
# models with others): beyond them the crop is empty, or larger than any photo.
IMAGE_DIM_RANGE, CROP_MARGIN_RANGE, CROP_SHIFT_Y_RANGE = (32, 1024), (0.0, 1.0), (-0.5, 0.5)


def framing_fault(image_dim: int, crop_margin: float, crop_shift_y: float) -> str | None:
    """What is wrong with a framing (None: nothing): each value finite and in its range,
    image_dim a multiple of 32 (the networks halve it five times)."""
    for name, value, (low, high) in (("image_dim", image_dim, IMAGE_DIM_RANGE),
                                     ("crop_margin", crop_margin, CROP_MARGIN_RANGE),
                                     ("crop_shift_y", crop_shift_y, CROP_SHIFT_Y_RANGE)):
        if not (math.isfinite(value) and low <= value <= high):
            return f"{name} {value:g} is outside [{low:g}, {high:g}]"
    if image_dim % 32:
        return f"image_dim {image_dim} is not a multiple of 32"
    return None


def framing_of(config: Config) -> dict:
    """What inference needs to frame a face exactly as training did (saved beside models)."""
    return {
        "image_dim": config.image_dim,
        "crop_margin": config.crop_margin,
        "crop_shift_y": config.crop_shift_y,
        "input_range": [-1.0, 1.0],
        "landmarks_range": [-0.5, 0.5],
        "num_landmarks": NUM_LANDMARKS,
        "color": "grayscale",
    }


def add_option_flags(parser: argparse.ArgumentParser, options_class, title: str) -> None:
    """One flag per field of an options dataclass (``ear_close`` -> ``--ear-close``), with
    the help in the field's metadata and its default. A field that is True by default gets
    ``--no-<name>`` to turn it off; a field whose default is None takes a float."""
    group = parser.add_argument_group(title)
    for option in dataclasses.fields(options_class):
        flag = option.name.replace("_", "-")
        help_text = option.metadata["help"]
        if option.default is True:
            group.add_argument(f"--no-{flag}", dest=option.name, action="store_false",
                               help=f"turn off: {help_text}")
        else:
            kind = float if option.default is None else type(option.default)
            group.add_argument(f"--{flag}", dest=option.name, type=kind, default=option.default,
                               help=f"{help_text} (default: {option.default})")


def options_from_args(args: argparse.Namespace, options_class):
    """The options dataclass that add_option_flags' flags describe."""
    return options_class(**{option.name: getattr(args, option.name)
                            for option in dataclasses.fields(options_class)})


# Ranges for the "check" metadata of option fields: (test, what the flag wants). NaN fails
# every test, and so does infinity: no option means anything at infinity.
AT_LEAST_0 = (lambda v: v >= 0, "at least 0")
AT_LEAST_1 = (lambda v: v >= 1, "at least 1")
ABOVE_0 = (lambda v: v > 0, "above 0")
FROM_0_TO_1 = (lambda v: 0 <= v <= 1, "from 0 to 1")
ABOVE_0_TO_1 = (lambda v: 0 < v <= 1, "above 0 and at most 1")


def option_problems(options) -> list[str]:
    """One line per field of an options dataclass whose value is outside the range in its
    metadata's ``check``, naming the flag: ``--d-cutoff: wants a number above 0, got 0.0``."""
    problems = []
    for option in dataclasses.fields(options):
        check = option.metadata.get("check")
        value = getattr(options, option.name)
        if check is None or value is None or isinstance(value, bool):
            continue
        test, wanted = check
        if not (math.isfinite(value) and test(value)):
            kind = "whole number" if isinstance(value, int) else "number"
            problems.append(f"--{option.name.replace('_', '-')}: wants a {kind} {wanted}, got {value}")
    return problems
