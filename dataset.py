"""300-W faces -> a fast, batched tf.data pipeline.

Reads dlib's imglab XML (``labels_ibug_300W_train.xml`` / ``_test.xml``, 0-based points) and
300-W folders of image + ``.pts`` files (1-based points). Every face box is one sample.

The pipeline decodes each image once, keeps only the (small, pre-shrunk) region around each
face in memory, and runs the augmentation's single affine warp in parallel
(``num_parallel_calls``): the GPU, not Python, sets the pace.
"""

from __future__ import annotations

import logging
import math
import os
import random
import re
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

import geometry
from augmentation import FaceLandmarksAugmentation
from config import Config, DLIB_ARCHIVE_NAME, KAGGLE_DATASET, NUM_LANDMARKS

log = logging.getLogger("dataset")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# Landmarks may fall a little outside the photo (a chin cut by the frame): allowed up to this
# fraction of the face box; further out is an annotation error.
OUTSIDE_TOLERANCE = 0.25


class DataError(ValueError):
    """A dataset file is unusable; the message names the file and the fault."""


@dataclass(frozen=True)
class Face:
    image_path: str  # absolute path of the photo
    box_xywh: tuple  # face box in source pixels (x = left, y = top)
    landmarks_px: np.ndarray  # 68 x 2, 0-based source pixels
    subset: str = ""  # "train", "common", "challenging", or the XML split name
    source: str = ""  # the annotation file it came from, for error messages


# ---------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------

def parse_dlib_xml(xml_path, subset: str = "") -> list[Face]:
    """All faces of a dlib imglab XML file. Boxes marked ignore='1' are left out."""
    xml_path = Path(xml_path)
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as err:
        raise DataError(f"{xml_path}: malformed XML ({err})") from None
    except OSError as err:
        raise DataError(f"{xml_path}: cannot read ({err.strerror})") from None
    images = root.find("images")
    if images is None:
        raise DataError(f"{xml_path}: no <images> element; not a dlib imglab file")
    faces = []
    for image_el in images.findall("image"):
        file_attr = image_el.get("file")
        if not file_attr:
            raise DataError(f"{xml_path}: an <image> has no 'file' attribute")
        # abspath, not resolve(): symlinked folders must keep their place under the data dir.
        image_path = os.path.abspath(xml_path.parent / file_attr)
        for box_index, box_el in enumerate(image_el.findall("box")):
            where = f"{xml_path}: image '{file_attr}' box {box_index}"
            if box_el.get("ignore", "0") == "1":
                continue
            try:
                box = tuple(float(box_el.get(k)) for k in ("left", "top", "width", "height"))
            except (TypeError, ValueError):
                raise DataError(f"{where}: box needs numeric left, top, width, height") from None
            if not all(math.isfinite(v) for v in box) or box[2] <= 0 or box[3] <= 0:
                raise DataError(f"{where}: box needs finite left, top and width, height > 0, got "
                                f"{', '.join(f'{v:g}' for v in box)}")
            parts = box_el.findall("part")
            if len(parts) != NUM_LANDMARKS:
                raise DataError(f"{where}: has {len(parts)} points, expected {NUM_LANDMARKS}")
            landmarks = np.zeros((NUM_LANDMARKS, 2), dtype=np.float32)
            seen = set()
            for part in parts:
                try:
                    index = int(part.get("name"))
                    if not 0 <= index < NUM_LANDMARKS:  # "-1" would index from the end
                        raise IndexError(index)
                    landmarks[index] = (float(part.get("x")), float(part.get("y")))
                except (TypeError, ValueError, IndexError):
                    raise DataError(f"{where}: bad <part> {ET.tostring(part).decode().strip()}") from None
                seen.add(index)
            if len(seen) != NUM_LANDMARKS:
                raise DataError(f"{where}: part names are not 00..67")
            if not np.all(np.isfinite(landmarks)):
                bad = int(np.flatnonzero(~np.all(np.isfinite(landmarks), axis=1))[0])
                raise DataError(f"{where}: part {bad:02d} has a non-finite coordinate "
                                f"({landmarks[bad, 0]:g}, {landmarks[bad, 1]:g})")
            faces.append(Face(image_path, box, landmarks, subset, str(xml_path)))
    return faces


def parse_pts(pts_path) -> np.ndarray:
    """A 300-W .pts file -> 68 x 2 float32 points, converted to 0-based pixels."""
    pts_path = Path(pts_path)
    try:
        text = pts_path.read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        raise DataError(f"{pts_path}: cannot read ({err.strerror})") from None
    match = re.search(r"n_points\s*:\s*(\d+)", text)
    if not match:
        raise DataError(f"{pts_path}: malformed .pts, no 'n_points:' header")
    declared = int(match.group(1))
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        raise DataError(f"{pts_path}: malformed .pts, points must sit between '{{' and '}}'")
    rows = [line.split() for line in text[start + 1:end].splitlines() if line.strip()]
    try:
        points = np.array([[float(a), float(b)] for a, b in rows], dtype=np.float32)
    except ValueError:
        raise DataError(f"{pts_path}: malformed .pts, every point line needs two numbers") from None
    if len(points) != declared:
        raise DataError(f"{pts_path}: header says {declared} points, file has {len(points)}")
    if not np.all(np.isfinite(points)):
        bad = int(np.flatnonzero(~np.all(np.isfinite(points), axis=1))[0])
        raise DataError(f"{pts_path}: point {bad + 1} has a non-finite coordinate "
                        f"({points[bad, 0]:g}, {points[bad, 1]:g})")
    if declared != NUM_LANDMARKS:
        raise DataError(f"{pts_path}: has {declared} points, expected {NUM_LANDMARKS}")
    return points - 1.0  # 300-W .pts are 1-based


def scan_pts_folder(root, subset_of=None) -> list[Face]:
    """Every image with a .pts beside it under `root`; boxes derived from the landmarks."""
    root = Path(root)
    faces = []
    for pts_path in sorted(root.rglob("*.pts")):
        image_path = next((pts_path.with_suffix(s) for s in IMAGE_SUFFIXES
                           if pts_path.with_suffix(s).exists()), None)
        if image_path is None:
            raise DataError(f"{pts_path}: no image beside it (looked for {', '.join(IMAGE_SUFFIXES)})")
        landmarks = parse_pts(pts_path)
        relative = image_path.relative_to(root).as_posix()
        subset = subset_of(relative) if subset_of else "all"
        faces.append(Face(os.path.abspath(image_path), geometry.box_from_landmarks(landmarks),
                          landmarks, subset or "", str(pts_path)))
    return faces


def standard_subset(relative_path: str) -> str | None:
    """The standard 300-W part of an archive path, or None for images outside it.

    train: afw, helen/trainset, lfpw/trainset; test: helen/testset + lfpw/testset = "common",
    ibug = "challenging". Mirrored copies (dlib's ``*_mirror.jpg``) stay out of the test side.
    """
    path = relative_path.replace("\\", "/").lower()
    mirrored = "_mirror" in Path(path).stem
    if path.startswith("afw/") or path.startswith("helen/trainset/") or path.startswith("lfpw/trainset/"):
        return "train"
    if path.startswith("helen/testset/") or path.startswith("lfpw/testset/"):
        return None if mirrored else "common"
    if path.startswith("ibug/"):
        return None if mirrored else "challenging"
    return None


def load_faces(data_dir, split: str = "train", split_mode: str = "standard") -> list[Face]:
    """Faces of one split of a dataset directory.

    ``split_mode="standard"`` reads every face of the dlib XML files (or the .pts files, when
    there is no XML), de-duplicates them, and keeps those whose path lies in the requested
    standard 300-W part: ``train``, ``test`` (= common + challenging), ``common``,
    ``challenging``. ``split_mode="xml"`` returns ``labels_ibug_300W_<split>.xml`` as it is.
    """
    data_dir = Path(data_dir)
    xml_files = sorted(data_dir.glob("labels_ibug_300W_*.xml"))
    if split_mode == "xml":
        xml_path = data_dir / f"labels_ibug_300W_{split}.xml"
        if not xml_path.exists():
            raise DataError(f"{xml_path}: not found")
        return parse_dlib_xml(xml_path, subset=split)
    if split_mode != "standard":
        raise ValueError(f"split_mode must be 'standard' or 'xml', not {split_mode!r}")
    wanted = {"train": {"train"}, "test": {"common", "challenging"}, "common": {"common"},
              "challenging": {"challenging"}, "all": {"train", "common", "challenging"}}
    if split not in wanted:
        raise ValueError(f"split must be one of {sorted(wanted)}, not {split!r}")
    if xml_files:
        faces = [f for xml in xml_files for f in parse_dlib_xml(xml)]
        root = os.path.abspath(data_dir)
        faces = [replace(f, subset=standard_subset(os.path.relpath(f.image_path, root)) or "")
                 for f in faces]
    else:
        faces = scan_pts_folder(data_dir, standard_subset)
        if not faces:
            raise DataError(f"{data_dir}: no labels_ibug_300W_*.xml and no .pts files")
    unique, seen = [], set()
    for face in faces:  # the same face may be listed by both XML files
        key = (face.image_path, tuple(np.round(face.box_xywh, 1)))
        if key not in seen:
            seen.add(key)
            unique.append(face)
    return [f for f in unique if f.subset in wanted[split]]


def split_by_image(faces: list[Face], fraction: float, seed: int):
    """(train, validation): a held-out fraction of the *images*, so no photo is in both."""
    images = sorted({f.image_path for f in faces})
    random.Random(seed).shuffle(images)
    count = int(round(len(images) * fraction))
    if fraction > 0 and count == 0 and len(images) > 1:
        count = 1
    held = set(images[:count])
    return [f for f in faces if f.image_path not in held], [f for f in faces if f.image_path in held]


# ---------------------------------------------------------------------------------------
# Download
# ---------------------------------------------------------------------------------------

def has_dataset(data_dir) -> bool:
    data_dir = Path(data_dir)
    return data_dir.is_dir() and (any(data_dir.glob("labels_ibug_300W_*.xml"))
                                  or any(data_dir.rglob("*.pts")))


def download_dataset(target_dir, handle: str = KAGGLE_DATASET) -> Path:
    """Fetch dlib's ibug_300W_large_face_landmark_dataset with kagglehub into target_dir."""
    try:
        import kagglehub
    except ImportError:
        raise DataError("kagglehub is not installed: pip install kagglehub, or download "
                        f"{DLIB_ARCHIVE_NAME} yourself and pass --data-dir") from None
    log.info("downloading Kaggle dataset %s (about 1.7 GB)...", handle)
    try:
        cache_path = Path(kagglehub.dataset_download(handle))
    except Exception as err:  # network, authentication, unknown handle
        raise DataError(
            f"could not download Kaggle dataset '{handle}' ({type(err).__name__}: {err}). "
            "Check the network and your Kaggle credentials (~/.kaggle/kaggle.json or "
            "KAGGLE_USERNAME/KAGGLE_KEY), or download dlib's "
            f"{DLIB_ARCHIVE_NAME} archive yourself and pass --data-dir") from None
    found = next((p.parent for p in cache_path.rglob("labels_ibug_300W_train.xml")), None)
    if found is None:
        raise DataError(f"Kaggle dataset '{handle}' at {cache_path} holds no labels_ibug_300W_train.xml")
    target_dir = Path(target_dir)
    if not target_dir.exists():
        target_dir.parent.mkdir(parents=True, exist_ok=True)
        target_dir.symlink_to(found.resolve(), target_is_directory=True)
        return target_dir
    return found


# ---------------------------------------------------------------------------------------
# Loading images
# ---------------------------------------------------------------------------------------

def read_image(path) -> np.ndarray:
    """Decode a photo as 8-bit grey, in stored pixel order (EXIF orientation ignored, as
    dlib's loader and imglab, which the annotations were made with, do)."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as err:
        raise DataError(f"{path}: cannot read image ({err.strerror})") from None
    if data.size == 0:
        raise DataError(f"{path}: empty file")
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        raise DataError(f"{path}: not a readable image (corrupt or unsupported format)")
    if image.ndim == 3 and image.shape[2] >= 3:  # OpenCV decodes BGR(A)
        image = image[:, :, [2, 1, 0] + ([3] if image.shape[2] == 4 else [])]
    return geometry.to_gray_uint8(image)


def read_image_bgr(path) -> np.ndarray:
    """Decode a photo as 8-bit BGR (what face detectors take), in the same stored pixel order
    as read_image."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as err:
        raise DataError(f"{path}: cannot read image ({err.strerror})") from None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION) if data.size else None
    if image is None:
        raise DataError(f"{path}: not a readable image (empty, corrupt or unsupported format)")
    return image


def check_face(face: Face, image_shape) -> None:
    """Raise DataError when a face's points or box lie outside its photo."""
    height, width = image_shape[:2]
    x, y, w, h = face.box_xywh
    if w <= 0 or h <= 0:
        raise DataError(f"{face.image_path}: face box {face.box_xywh} has no area")
    if x + w <= 0 or y + h <= 0 or x >= width or y >= height:
        raise DataError(f"{face.image_path}: face box {face.box_xywh} lies outside the "
                        f"{width}x{height} image")
    slack = OUTSIDE_TOLERANCE * max(w, h)
    pts = face.landmarks_px
    outside = ((pts[:, 0] < -slack) | (pts[:, 1] < -slack)
               | (pts[:, 0] > width - 1 + slack) | (pts[:, 1] > height - 1 + slack))
    if outside.any():
        index = int(np.argmax(outside))
        raise DataError(f"{face.image_path}: {int(outside.sum())} points outside the "
                        f"{width}x{height} image (point {index} at {pts[index].tolist()})")


@dataclass
class CachedFace:
    region: np.ndarray  # small grey image around the face
    box_xywh: tuple  # in region pixels
    landmarks_px: np.ndarray  # in region pixels
    face: Face


def cache_face(face: Face, image_gray: np.ndarray, config: Config) -> CachedFace:
    centre, side = geometry.face_square(face.box_xywh, config.crop_margin, config.crop_shift_y)
    region, matrix = geometry.extract_region(image_gray, centre, side, config.image_dim)
    scale = math.sqrt(abs(np.linalg.det(matrix[:, :2])))
    x, y, w, h = face.box_xywh
    corner = geometry.transform_points(np.array([[x - 0.5, y - 0.5]]), matrix)[0] + 0.5
    box = (float(corner[0]), float(corner[1]), w * scale, h * scale)
    landmarks = geometry.transform_points(face.landmarks_px, matrix).astype(np.float32)
    return CachedFace(region, box, landmarks, face)


class SkipReport:
    """Collects the files left out, warning about each one; never a silent change."""

    def __init__(self, strict: bool):
        self.strict = strict
        self.skipped: list[str] = []

    def add(self, message: str) -> None:
        if self.strict:
            raise DataError(message)
        self.skipped.append(message)
        log.warning("skipped: %s", message)

    def summary(self, total: int) -> str:
        return f"{len(self.skipped)} of {total} faces skipped" if self.skipped else f"all {total} faces usable"


# ---------------------------------------------------------------------------------------
# The dataset
# ---------------------------------------------------------------------------------------

class LandmarkDataset:
    """Faces -> tf.data.Dataset of (image [B, D, D, 1] in [-1, 1], landmarks [B, 136] in
    [-0.5, 0.5]).

    ``training=True`` shuffles and augments each epoch anew (deterministically for a given
    seed); ``training=False`` gives the fixed evaluation crop, in order, every time.
    """

    def __init__(self, faces: list[Face], config: Config, training: bool,
                 seed: int | None = None, workers: int | None = None):
        if not faces:
            raise DataError("no faces to build a dataset from")
        self.config = config
        self.training = training
        self.seed = config.seed if seed is None else seed
        self.augment = FaceLandmarksAugmentation(config, training=training)
        self.report = SkipReport(config.strict_data)
        self.items = self._load(faces, workers or min(8, (os.cpu_count() or 2) * 2))
        log.info("%s: %s", "train" if training else "eval", self.report.summary(len(faces)))
        if not self.items:
            raise DataError(f"none of the {len(faces)} faces could be loaded; see the warnings above")

    @classmethod
    def from_items(cls, items: list[CachedFace], config: Config, training: bool,
                   seed: int | None = None) -> "LandmarkDataset":
        """A dataset of faces already cached (``cache_face``), e.g. read back from a pack
        (packed_train.py): no file is read."""
        if not items:
            raise DataError("no faces to build a dataset from")
        self = cls.__new__(cls)
        self.config, self.training = config, training
        self.seed = config.seed if seed is None else seed
        self.augment = FaceLandmarksAugmentation(config, training=training)
        self.report = SkipReport(config.strict_data)
        self.items = list(items)
        return self

    def _load(self, faces: list[Face], workers: int) -> list[CachedFace]:
        by_image: dict[str, list[Face]] = {}
        for face in faces:
            by_image.setdefault(face.image_path, []).append(face)

        def load_one(image_path):
            try:
                image = read_image(image_path)
            except DataError as err:
                return [], [f"{err} ({len(by_image[image_path])} faces)"]
            cached, errors = [], []
            for face in by_image[image_path]:
                try:
                    check_face(face, image.shape)
                    cached.append(cache_face(face, image, self.config))
                except DataError as err:
                    errors.append(f"{err} [from {face.source}]")
            return cached, errors

        items = []
        # OpenCV releases the GIL while decoding, so threads decode in parallel.
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for cached, errors in pool.map(load_one, list(by_image)):
                for message in errors:
                    self.report.add(message)
                items.extend(cached)
        return items

    def __len__(self) -> int:
        return len(self.items)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(images [N, D, D, 1], landmarks [N, 136]) of every face, in order: with
        ``training=False``, the fixed evaluation crops, as arrays for Keras."""
        images, landmarks = zip(*(self.sample(i) for i in range(len(self.items))))
        return np.stack(images), np.stack(landmarks)

    @property
    def faces(self) -> list[Face]:
        return [item.face for item in self.items]

    def sample(self, index: int, draw: int = 0):
        """(image [D, D, 1] float32, landmarks_norm [136] float32) for one face.

        In training, ``draw`` numbers the random draw: the same (seed, index, draw) always
        gives the same augmentation, whichever thread runs it.
        """
        item = self.items[index]
        rng = np.random.default_rng([self.seed, index, draw]) if self.training else None
        image, landmarks_px = self.augment(item.region, item.landmarks_px,
                                           box_to_dict(item.box_xywh), rng=rng)
        return image, geometry.px_to_norm(landmarks_px, self.config.image_dim).reshape(-1)

    def tf_dataset(self, batch_size: int | None = None, repeat: bool = False,
                   drop_remainder: bool = False, first_epoch: int = 0,
                   shard: tuple[int, int] = (1, 0)):
        """Batched, prefetched tf.data pipeline; decoding is done, the warp runs in parallel.

        For training use ``repeat=True`` (an endless stream, one fresh permutation and
        augmentation per epoch) with ``steps_per_epoch`` in ``fit``; ``first_epoch`` lets a
        resumed run continue the sequence of epochs instead of replaying epoch 0.
        ``shard=(count, index)`` keeps every count-th face of that stream from ``index`` on:
        one worker's share in multi-worker training, picked before any image is warped.
        """
        import tensorflow as tf

        batch_size = batch_size or self.config.batch_size
        dim = self.config.image_dim
        count = len(self.items)

        def load(index, draw):
            return self.sample(int(index), int(draw))

        def tf_load(index, draw):
            image, landmarks = tf.numpy_function(load, [index, draw], [tf.float32, tf.float32],
                                                 stateful=False)
            image.set_shape([dim, dim, 1])
            landmarks.set_shape([2 * NUM_LANDMARKS])
            return image, landmarks

        if self.training:
            # Epoch e visits its own permutation (a stateless hash of seed and e) and passes
            # e as the draw number, so every epoch is augmented afresh, reproducibly.
            seed = self.seed

            def epoch_indices(epoch):
                perm = tf.random.experimental.stateless_shuffle(
                    tf.range(count, dtype=tf.int64),
                    seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
                return tf.data.Dataset.from_tensor_slices(perm).map(lambda i: (i, epoch))

            last = (1 << 62) if repeat else first_epoch + 1
            ds = tf.data.Dataset.range(first_epoch, last).flat_map(epoch_indices)
        else:
            ds = tf.data.Dataset.range(count).map(lambda i: (i, tf.constant(0, tf.int64)))
            if repeat:
                ds = ds.repeat()
        num_shards, shard_index = shard
        if num_shards > 1:
            ds = ds.shard(num_shards, shard_index)
        ds = ds.map(tf_load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
        return ds.prefetch(tf.data.AUTOTUNE)


def box_to_dict(box_xywh) -> dict:
    x, y, w, h = box_xywh
    return {"left": x, "top": y, "width": w, "height": h}
