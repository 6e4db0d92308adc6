"""The standard 300-W numbers for a Keras checkpoint or a TFLite model.

    python evaluate.py --data-dir ../shared/data/300w_subset --model models/landmarks_int8.tflite
    python evaluate.py --data-dir DIR --split test --model checkpoints/best_model_full.h5 --json out.json --plot ced.png
    python evaluate.py --data-dir DIR --model M --detector blazeface   # boxes from a face detector
    python evaluate.py --data-dir DIR --split train --fit-detector blazeface-short
    python evaluate.py --data-dir DIR --split validation --model A.weights.h5 --compare B.weights.h5

``--split validation`` scores the training images train.py held out (``--seed``,
``--val-fraction``), the faces that choose between models; ``--compare`` scores more models
on the same faces and gives each one's per-face NME difference from ``--model``, with its
standard error and a bootstrap 95 % interval, so that a choice rests on more than the noise
of a hundred faces.

The metrics are pure NumPy functions over arrays of faces (as in HRNet's evaluation code).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from pathlib import Path

import numpy as np

import geometry

LEFT_EYE = slice(36, 42)
RIGHT_EYE = slice(42, 48)
REGIONS = {"jaw": slice(0, 17), "brows": slice(17, 27), "nose": slice(27, 36),
           "eyes": slice(36, 48), "mouth": slice(48, 68)}

# ---------------------------------------------------------------------------------------
# Metrics: arrays of shape [faces, 68, 2] in the same pixels
# ---------------------------------------------------------------------------------------


def inter_ocular(truth: np.ndarray) -> np.ndarray:
    """Outer-eye-corner distance (points 36 and 45) per face."""
    return np.linalg.norm(truth[:, 36] - truth[:, 45], axis=-1)


def inter_pupil(truth: np.ndarray) -> np.ndarray:
    """Distance between the eye centres (means of points 36-41 and 42-47) per face."""
    return np.linalg.norm(truth[:, LEFT_EYE].mean(axis=1) - truth[:, RIGHT_EYE].mean(axis=1), axis=-1)


NORMALISERS = {"ion": inter_ocular, "ipn": inter_pupil}


def point_errors(pred: np.ndarray, truth: np.ndarray, norm: str = "ion") -> np.ndarray:
    """[faces, 68] point-to-point distances divided by each face's normaliser."""
    pred, truth = np.asarray(pred, np.float64), np.asarray(truth, np.float64)
    return np.linalg.norm(pred - truth, axis=-1) / NORMALISERS[norm](truth)[:, None]


def nme(pred: np.ndarray, truth: np.ndarray, norm: str = "ion") -> np.ndarray:
    """Per-face normalised mean error (a fraction, not percent)."""
    return point_errors(pred, truth, norm).mean(axis=1)


def failure_rate(errors: np.ndarray, threshold: float) -> float:
    """Fraction of faces whose NME exceeds the threshold."""
    return float(np.mean(np.asarray(errors) > threshold))


def auc(errors: np.ndarray, threshold: float = 0.08) -> float:
    """Area under the cumulative error distribution from 0 to `threshold`, divided by
    `threshold` (1 = every face perfect). Exact: each face adds max(0, threshold - e)."""
    errors = np.asarray(errors, np.float64)
    return float(np.mean(np.clip(threshold - errors, 0.0, None)) / threshold)


def ced(errors: np.ndarray, threshold: float = 0.08, steps: int = 200):
    """(x, fraction of faces with NME <= x) for the CED plot."""
    xs = np.linspace(0.0, threshold, steps + 1)
    errors = np.sort(np.asarray(errors))
    return xs, np.searchsorted(errors, xs, side="right") / max(1, len(errors))


def summarize(pred: np.ndarray, truth: np.ndarray) -> dict:
    errors = nme(pred, truth, "ion")
    per_point = point_errors(pred, truth, "ion")
    return {
        "count": int(len(errors)),
        "nme_ion": float(errors.mean()),
        # Its standard error over these faces (None for one face): how far another draw of
        # as many faces could move it.
        "nme_ion_stderr": float(errors.std(ddof=1) / np.sqrt(len(errors))) if len(errors) > 1 else None,
        "nme_ipn": float(nme(pred, truth, "ipn").mean()),
        "fr_008": failure_rate(errors, 0.08),
        "fr_010": failure_rate(errors, 0.10),
        "auc_008": auc(errors, 0.08),
        "regions_ion": {name: float(per_point[:, s].mean()) for name, s in REGIONS.items()},
    }


# ---------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------

class KerasLandmarks:
    """A Keras checkpoint (.h5 full model, or .weights.h5 with config.json beside it)."""

    def __init__(self, path: Path):
        import keras

        import losses  # noqa: F401 - registers the custom objects
        from model import build_network

        folder = path.parent
        config_file = folder / "config.json"
        config = json.loads(config_file.read_text()) if config_file.exists() else {}
        framing_file = folder / "framing.json"
        if framing_file.exists():
            self.framing = json.loads(framing_file.read_text())
        elif config:
            self.framing = {k: config[k] for k in ("image_dim", "crop_margin", "crop_shift_y")}
        else:
            raise ValueError(f"{path}: no framing.json or config.json beside it (train.py writes both)")
        # Rebuilt in float32 when the checkpoint holds weights only, or was trained with
        # mixed precision (its saved layers would compute in float16).
        if path.name.endswith(".weights.h5") or config.get("mixed_precision"):
            if "arch" not in config:
                raise ValueError(f"{config_file}: needed to rebuild the network of {path.name}")
            keras.mixed_precision.set_global_policy("float32")
            self.model = build_network(config["arch"], int(self.framing["image_dim"]))
            try:  # Keras warns about each layer, then lists every mismatched array
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    self.model.load_weights(str(path))
            except ValueError:
                raise ValueError(f"{path}: its weights do not fit the '{config['arch']}' network that "
                                 f"{config_file} names (weights of another --arch?)") from None
            for warning in caught:
                warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
        else:
            self.model = keras.saving.load_model(str(path), compile=False)

    def predict_crops(self, crops: np.ndarray) -> np.ndarray:
        return self.model.predict(crops, batch_size=64, verbose=0).reshape(len(crops), -1, 2)


class TFLiteLandmarks:
    def __init__(self, path: Path, threads: int = 2):
        from predict import LandmarkModel

        self.runtime = LandmarkModel(path, threads=threads)
        self.framing = self.runtime.metadata["framing"]

    def predict_crops(self, crops: np.ndarray) -> np.ndarray:
        return self.predict_crops_with_confidence(crops)[0]

    def predict_crops_with_confidence(self, crops: np.ndarray):
        """(landmarks [N, 68, 2] in [-0.5, 0.5], confidences [N, 68] or None)."""
        dim = self.runtime.image_dim
        results = [self.runtime.run_with_confidence(c) for c in crops]
        points = np.stack([geometry.px_to_norm(p, dim) for p, _ in results])
        confidence = None if results[0][1] is None else np.stack([c for _, c in results])
        return points, confidence


# What --split can name (evaluation_faces): the 300-W parts, or train.py's held-out faces.
SPLITS = ("test", "common", "challenging", "train", "validation")
PLOT_SUFFIXES = (".png", ".pdf", ".svg")


def model_files(path) -> list[Path]:
    """The files a model is read from: the model, and the metadata beside it."""
    path = Path(path)
    if path.suffix == ".tflite":
        return [path, path.with_suffix(".json")]
    return [path, path.parent / "config.json", path.parent / "framing.json"]


def output_fault(flag: str, path, inputs) -> str | None:
    """Why ``path`` (given to ``flag``) cannot be written, checked before any scoring: it is
    one of ``inputs`` (the models, their metadata, the data), a folder, or in a folder that
    does not exist or cannot be written to. None: it can."""
    path = Path(path)
    if os.path.realpath(path) in {os.path.realpath(p) for p in inputs}:
        return f"{flag} {path}: is one of the inputs (a model, its metadata or the data); write elsewhere"
    if path.is_dir():
        return f"{flag} {path}: is a folder; give a file name"
    folder = path.parent
    if not folder.is_dir():
        return f"{flag} {path}: the folder {folder} does not exist"
    if not os.access(folder, os.W_OK):
        return f"{flag} {path}: the folder {folder} is not writable"
    return None


def load_landmark_model(path) -> KerasLandmarks | TFLiteLandmarks:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file not found")
    if path.suffix == ".tflite":
        return TFLiteLandmarks(path)
    if path.suffix == ".h5":
        return KerasLandmarks(path)
    raise ValueError(f"{path}: unknown model type; expected .h5, .weights.h5 or .tflite")


# ---------------------------------------------------------------------------------------
# Faces, boxes and predictions
# ---------------------------------------------------------------------------------------

def evaluation_faces(data_dir, split: str = "test", split_mode: str = "standard",
                     seed: int = 42, val_fraction: float = 0.05) -> list:
    """The faces to score, each tagged with its subset (common / challenging / train /
    validation).

    ``split="validation"``: the training images that train.py holds out with the same
    ``split_mode``, ``seed`` and ``val_fraction`` (dataset.split_by_image).

    A dataset folder (dlib's archive, or a folder of .pts files) is split the standard 300-W
    way by path, as train.py does (``split_mode="standard"``): ``test`` scores the Common
    (HELEN test + LFPW test) and Challenging (iBUG) parts from both XML files, mirrored copies
    left out; dlib's ``labels_ibug_300W_test.xml`` holds mostly training-part images and is
    not used as it is. ``split_mode="xml"`` scores ``labels_ibug_300W_<split>.xml`` as listed.
    A single XML file, or a folder of .pts files that is not an archive root, is scored as
    listed, tagged by path where it can be.
    """
    import dataset

    data_dir = Path(data_dir)
    if split == "validation":
        if not 0 < val_fraction < 1:
            raise ValueError(f"--val-fraction must be between 0 and 1, got {val_fraction:g}")
        if not dataset.has_dataset(data_dir):
            raise FileNotFoundError(f"{data_dir}: no dataset there (XML files or .pts folders)")
        train_part = dataset.load_faces(data_dir, "train", split_mode)
        if not train_part:
            raise FileNotFoundError(f"{data_dir}: no training faces to hold validation faces out of")
        held = dataset.split_by_image(train_part, val_fraction, seed)[1]
        return [dataset.replace(face, subset="validation") for face in held]
    if data_dir.is_file() and data_dir.suffix == ".xml":
        faces, root, tag_default = dataset.parse_dlib_xml(data_dir), data_dir.parent, split
    elif split_mode == "standard" and is_archive_root(data_dir):
        faces = dataset.load_faces(data_dir, split, "standard")
        if not faces:
            raise FileNotFoundError(f"{data_dir}: no faces of the standard 300-W {split!r} part "
                                    f"(paths under afw/, helen/, lfpw/, ibug/); --split-mode xml "
                                    f"scores labels_ibug_300W_{split}.xml as listed")
        return faces
    else:
        xml_path = data_dir / f"labels_ibug_300W_{split}.xml"
        if xml_path.exists():
            faces = dataset.parse_dlib_xml(xml_path)
        else:
            faces = dataset.scan_pts_folder(data_dir)
            if not faces:
                raise FileNotFoundError(f"{xml_path}: not found, and {data_dir} holds no .pts files")
        root, tag_default = data_dir, split
    root = os.path.abspath(root)
    tagged = []
    for face in faces:
        relative = Path(os.path.relpath(face.image_path, root)).as_posix()
        subset = dataset.standard_subset(relative)
        tagged.append(dataset.replace(face, subset=subset if subset not in (None, "train") else tag_default))
    return tagged


ARCHIVE_PARTS = ("afw", "helen", "lfpw", "ibug")


def is_archive_root(folder: Path) -> bool:
    """dlib's archive layout: its XML files, or the 300-W part folders, at the top."""
    return (any(folder.glob("labels_ibug_300W_*.xml"))
            or any((folder / part).is_dir() for part in ARCHIVE_PARTS))


def scored_parts(faces) -> dict:
    """How many faces of each source folder were scored: {"lfpw/testset": 224, ...}."""
    counts: dict[str, int] = {}
    for face in faces:
        parts = Path(face.image_path).parts
        for i, part in enumerate(parts):
            if part.lower() in ARCHIVE_PARTS:
                key = "/".join(parts[i:i + 2]) if part.lower() in ("helen", "lfpw") else part
                break
        else:
            key = str(Path(face.image_path).parent.name)
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


box_iou = geometry.box_iou


def match_detection(detections, face, min_iou: float = 0.3):
    """The detection (face_detector.Detection) whose training-convention box frames this
    annotated face, or None."""
    target = geometry.box_from_landmarks(face.landmarks_px)
    scored = [(box_iou(d.training_box_xywh, target), d) for d in detections]
    best = max(scored, default=(0.0, None), key=lambda s: s[0])
    return best[1] if best[0] >= min_iou else None


def face_boxes(faces, detector=None):
    """((face, box, roll) for each face to score, faces the detector missed): the dataset's
    box, upright; or, with a detector (run on the colour photo), the training-convention box
    of the detection matched to the annotated face, and the detection's roll."""
    import dataset

    if detector is None:
        return [(face, face.box_xywh, 0.0) for face in faces], []
    framed, missed = [], []
    for image_path, image_faces in by_image(faces).items():
        detected = detector.detect(dataset.read_image_bgr(image_path))
        for face in image_faces:
            detection = match_detection(detected, face)
            if detection is None:
                missed.append(face)
            else:
                framed.append((face, detection.training_box_xywh, detection.roll_deg))
    return framed, missed


def by_image(faces) -> dict:
    """The faces grouped by photo, in order of first appearance."""
    groups: dict[str, list] = {}
    for face in faces:
        groups.setdefault(face.image_path, []).append(face)
    return groups


def crop_boxes(framed, framing: dict):
    """(crops [N, D, D, 1] in [-1, 1], source->crop matrices) for each (face, box, roll),
    in order, framed as predict.py frames a face (geometry.frame_face_upright); each photo
    is read once."""
    import dataset

    dim = int(framing["image_dim"])
    crops, matrices = [None] * len(framed), [None] * len(framed)
    indices: dict[str, list] = {}
    for index, (face, _, _) in enumerate(framed):
        indices.setdefault(face.image_path, []).append(index)
    for image_path, members in indices.items():
        image = dataset.read_image(image_path)
        for index in members:
            _, box, roll_deg = framed[index]
            crop, matrices[index] = geometry.frame_face_upright(
                image, box, dim, float(framing["crop_margin"]), float(framing["crop_shift_y"]), roll_deg)
            crops[index] = geometry.gray_to_input(crop)
    crops = np.stack(crops) if crops else np.zeros((0, dim, dim, 1), np.float32)
    return crops, matrices


def frame_faces(faces, framing: dict, detector=None):
    """Each face's evaluation crop, as predict.py frames it: (crops [N, D, D, 1] in [-1, 1],
    source->crop matrices, kept faces, faces the detector missed).

    With a detector (run on the colour photo), its box matched to the annotated face
    replaces the dataset's, and the crop is turned upright by the detection's roll.
    """
    framed, missed = face_boxes(faces, detector)
    crops, matrices = crop_boxes(framed, framing)
    return crops, matrices, [face for face, _, _ in framed], missed


def predict_framed(runner, framed, flip_average: bool = False) -> np.ndarray:
    """Points [N, 68, 2] in photo pixels for each (face, box, roll)."""
    dim = int(runner.framing["image_dim"])
    crops, matrices = crop_boxes(framed, runner.framing)
    points = geometry.norm_to_px(runner.predict_crops(crops), dim)
    if flip_average:
        mirrored = geometry.norm_to_px(runner.predict_crops(crops[:, :, ::-1].copy()), dim)
        points = (points + geometry.unmirror_landmarks(mirrored, dim)) / 2
    return np.stack([geometry.transform_points(p, geometry.invert(m)) for p, m in zip(points, matrices)])


def predict_faces(runner, faces, detector=None, flip_average: bool = False, refine: bool = False,
                  boxes=None, mesh=None, part_refiners=()):
    """(predictions [N, 68, 2], truths [N, 68, 2], kept faces, missed faces) in image pixels.

    ``refine``: a second pass framed by the box of the first pass's points (at the same
    roll, geometry.box_from_landmarks_upright), and the mean of the two passes, as
    predict.py --refine does. ``boxes``: ``face_boxes(faces, detector)`` when already
    found (a detector's boxes do not depend on the model), so it is not run again.
    ``mesh``: a face_mesh.MeshLandmarks whose points, on the same box and roll, are averaged
    with the model's, as predict.py --with-mesh does. ``part_refiners``: parts.PartRefiner
    that look at a part again, as predict.py --refine-eyes does."""
    framed, missed = boxes if boxes is not None else face_boxes(faces, detector)
    kept = [face for face, _, _ in framed]
    if not kept:
        return np.zeros((0, 68, 2)), np.zeros((0, 68, 2)), kept, missed
    preds = predict_framed(runner, framed, flip_average)
    if refine:
        second = [(face, geometry.box_from_landmarks_upright(points, roll), roll)
                  for (face, _, roll), points in zip(framed, preds)]
        preds = (preds + predict_framed(runner, second, flip_average)) / 2
    if mesh is not None or part_refiners:
        preds = second_views(framed, preds, mesh, part_refiners)
    truths = np.stack([f.landmarks_px for f in kept]).astype(np.float64)
    return preds, truths, kept, missed


def second_views(framed, preds, mesh=None, part_refiners=()) -> np.ndarray:
    """The first pass's points [N, 68, 2] after the options that look at each colour photo again,
    in predict.py's order: the mean with the face mesh's, then each part model. Each photo is
    read once."""
    import dataset
    import face_mesh

    out, image_path, image = [], None, None
    for (face, box, roll), points in zip(framed, preds):
        if face.image_path != image_path:
            image_path, image = face.image_path, dataset.read_image_bgr(face.image_path)
        if mesh is not None:
            points = face_mesh.average_with_mesh(points, mesh.predict(image, box, roll))
        for refiner in part_refiners:
            points = refiner.refine(image, points)
        out.append(points)
    return np.stack(out)


def evaluate(runner, faces, detector=None, flip_average: bool = False, refine: bool = False,
             boxes=None, mesh=None, part_refiners=()) -> dict:
    preds, truths, kept, missed = predict_faces(runner, faces, detector, flip_average, refine, boxes, mesh,
                                                part_refiners)
    subsets = sorted({f.subset for f in kept})
    report = {"boxes": detector.name if detector else "dataset", "faces": len(faces),
              "missed": len(missed), "flip_average": flip_average, "refine": refine,
              "with_mesh": mesh is not None, "refined_parts": [r.part.name for r in part_refiners], "subsets": {}}
    for subset in subsets:
        mask = np.array([f.subset == subset for f in kept])
        report["subsets"][subset] = summarize(preds[mask], truths[mask])
    if kept:
        full = summarize(preds, truths)
        if len(subsets) > 1:
            report["subsets"]["full"] = full
        report.update({k: v for k, v in full.items()})
    report["_errors"] = nme(preds, truths, "ion") if kept else np.zeros(0)
    report["_subset_of"] = [f.subset for f in kept]
    return report


def paired_difference(reference: np.ndarray, other: np.ndarray, draws: int = 10000,
                      seed: int = 0) -> dict:
    """How ``other`` differs from ``reference``, face by face (two arrays of per-face NME
    on the same faces, in order): the mean difference (negative: ``other`` is better), its
    standard error, a percentile bootstrap 95 % interval over the faces, the faces each
    does better on, and a verdict: ``better``/``worse`` when the interval excludes 0, else
    ``within noise``."""
    reference, other = np.asarray(reference, np.float64), np.asarray(other, np.float64)
    if reference.shape != other.shape or reference.ndim != 1 or len(reference) < 2:
        raise ValueError(f"need two per-face NME arrays of the same faces (at least 2), got "
                         f"shapes {reference.shape} and {other.shape}")
    diff = other - reference
    means = diff[np.random.default_rng(seed).integers(0, len(diff), (draws, len(diff)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"mean": float(diff.mean()), "stderr": float(diff.std(ddof=1) / np.sqrt(len(diff))),
            "ci95": [float(low), float(high)], "better_faces": int((diff < 0).sum()),
            "worse_faces": int((diff > 0).sum()),
            "verdict": "better" if high < 0 else "worse" if low > 0 else "within noise"}


def format_comparison(reference_name: str, reference: dict, rows: list) -> str:
    """The reference's report and rows of (model, its NME, paired_difference against the
    reference). The reference's stderr is its NME's own; the others', their difference's."""
    lines = [f"{'model':<44}{'NME io%':>8}{'diff':>8}{'stderr':>8}{'95% interval':>18}"
             f"{'faces +/-':>11}  verdict",
             f"{reference_name[-44:]:<44}{100 * reference['nme_ion']:>8.3f}{'':>8}"
             f"{100 * reference['nme_ion_stderr']:>8.3f}  (reference)"]
    for name, value, d in rows:
        interval = f"[{100 * d['ci95'][0]:+.3f}, {100 * d['ci95'][1]:+.3f}]"
        lines.append(f"{name[-44:]:<44}{100 * value:>8.3f}{100 * d['mean']:>+8.3f}{100 * d['stderr']:>8.3f}"
                     f"{interval:>18}{d['better_faces']:>5} /{d['worse_faces']:>4}  {d['verdict']}")
    lines.append("diff: mean per-face NME minus the reference's (negative: better), in points of "
                 "% io; stderr: of the reference's NME, then of each difference; interval: bootstrap "
                 "over the faces; faces +/-: better / worse than the reference")
    return "\n".join(lines)


def face_score_check(runner, faces, shift: float = 0.7) -> dict:
    """How the model's face score (predict.face_score) falls on the faces, framed by their
    boxes, and on crops without a whole face: the same boxes moved sideways by `shift` of
    their width. Needs a model with the confidence output."""
    import dataset
    from predict import FACE_SCORE_THRESHOLD

    if not hasattr(runner, "predict_crops_with_confidence"):
        raise ValueError("face scores need a .tflite model with the confidence output")
    moved = [dataset.replace(f, box_xywh=(f.box_xywh[0] + shift * f.box_xywh[2], *f.box_xywh[1:]))
             for f in faces]
    result = {"threshold": FACE_SCORE_THRESHOLD}
    dim = int(runner.framing["image_dim"])
    for name, group in (("faces", faces), ("moved_boxes", moved)):
        crops, matrices, kept, _ = frame_faces(group, runner.framing)
        points, confidence = runner.predict_crops_with_confidence(crops)
        if confidence is None:
            raise ValueError("this model has no confidence output (export it again with export_tflite.py)")
        scores = confidence.mean(axis=1)
        result[name] = {"count": int(len(scores)), "median": float(np.median(scores)),
                        "p05": float(np.percentile(scores, 5)), "p95": float(np.percentile(scores, 95)),
                        "above_threshold": float(np.mean(scores >= FACE_SCORE_THRESHOLD))}
        if name == "faces":
            truths = np.stack([geometry.px_to_norm(geometry.transform_points(f.landmarks_px, m), dim)
                               for f, m in zip(kept, matrices)])
            errors = point_errors(points, truths, "ion")  # [N, 68]
            result[name]["confidence_error_rank_correlation"] = float(np.mean(
                [-rank_correlation(confidence[:, k], errors[:, k]) for k in range(errors.shape[1])]))
    return result


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two 1-D arrays (no ties expected: real-valued)."""
    rank_a, rank_b = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(rank_a, rank_b)[0, 1])


def format_face_scores(check: dict) -> str:
    lines = [f"face score (threshold {check['threshold']}):",
             f"{'crops':<14}{'count':>6}{'median':>8}{'p05':>7}{'p95':>7}{'>= thr':>8}"]
    for name in ("faces", "moved_boxes"):
        s = check[name]
        lines.append(f"{name:<14}{s['count']:>6}{s['median']:>8.3f}{s['p05']:>7.3f}{s['p95']:>7.3f}"
                     f"{100 * s['above_threshold']:>7.1f}%")
    lines.append("moved_boxes: each box moved sideways by 70 % of its width (half a face at most)")
    lines.append("per point, rank correlation of low confidence with high error, mean over the 68 "
                 f"points: {check['faces']['confidence_error_rank_correlation']:+.3f}")
    return "\n".join(lines)


def fit_detector_boxes(detector, faces) -> dict:
    """Fit how a detector's own boxes relate to the dataset's boxes: the constants of its
    mapping onto the training convention (face_detector.map_box_to_training). The shift is
    measured in the face's frame (turned by the detection's roll)."""
    import dataset

    ratios, shifts_x, shifts_y, matched = [], [], [], 0
    for face in faces:
        detections = detector.detect(dataset.read_image_bgr(face.image_path))
        best = max(((box_iou(d.box_xywh, face.box_xywh), d) for d in detections),
                   default=(0.0, None), key=lambda s: s[0])
        if best[0] < 0.3:
            continue
        matched += 1
        x, y, w, h = face.box_xywh
        bx, by, bw, bh = best[1].box_xywh
        theta = np.radians(best[1].roll_deg)
        dx, dy = (x + w / 2) - (bx + bw / 2), (y + h / 2) - (by + bh / 2)
        ratios.append(np.sqrt(w * h) / np.sqrt(bw * bh))
        shifts_x.append((np.cos(theta) * dx + np.sin(theta) * dy) / bw)
        shifts_y.append((-np.sin(theta) * dx + np.cos(theta) * dy) / bh)
    if not matched:
        raise ValueError("the detector matched none of the faces")
    return {"detector": detector.name, "matched": matched, "faces": len(faces),
            "SCALE": round(float(np.median(ratios)), 3),
            "SHIFT_X": round(float(np.median(shifts_x)), 3), "SHIFT_Y": round(float(np.median(shifts_y)), 3)}


# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------

def format_report(report: dict) -> str:
    lines = [f"boxes: {report['boxes']}; faces: {report['faces']}"
             + (f", detector missed {report['missed']}" if report["boxes"] != "dataset" else "")
             + ("; flip averaging" if report["flip_average"] else "")
             + ("; refined (a second pass framed by the first's points)" if report["refine"] else "")
             + ("; averaged with the face mesh" if report.get("with_mesh") else "")
             + "".join(f"; {name} looked at again" for name in report.get("refined_parts", [])),
             f"{'subset':<12}{'count':>6}{'NME io%':>9}{'NME ip%':>9}{'FR@.08':>8}{'FR@.10':>8}"
             f"{'AUC@.08':>9}  " + " ".join(f"{r:>6}" for r in REGIONS)]
    for name, s in report["subsets"].items():
        lines.append(f"{name:<12}{s['count']:>6}{100 * s['nme_ion']:>9.2f}{100 * s['nme_ipn']:>9.2f}"
                     f"{100 * s['fr_008']:>7.1f}%{100 * s['fr_010']:>7.1f}%{s['auc_008']:>9.3f}  "
                     + " ".join(f"{100 * s['regions_ion'][r]:>6.2f}" for r in REGIONS))
    lines.append("NME in % of the outer-eye-corner (io) / pupil (ip) distance; regions: NME io% per region")
    return "\n".join(lines)


def plot_ced(report: dict, png_path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    errors, subsets = report["_errors"], np.array(report["_subset_of"])
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name in report["subsets"]:
        selected = errors if name == "full" else errors[subsets == name]
        xs, ys = ced(selected, 0.08)
        ax.plot(100 * xs, ys, label=f"{name} (AUC {auc(selected):.3f}, n={len(selected)})")
    ax.set(xlabel="NME (%), outer eye corners", ylabel="fraction of faces", ylim=(0, 1),
           xlim=(0, 8), title=title or "Cumulative error distribution")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    from face_detector import DETECTORS, make_detector
    from predict import DEFAULT_MODEL

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--data-dir", required=True,
                        help="dlib XML layout (DIR/labels_ibug_300W_<split>.xml), an XML file, or a .pts folder")
    parser.add_argument("--split", default="test", choices=SPLITS,
                        help="test (Common + Challenging), common, challenging, train, or validation "
                        "(the training images train.py holds out: --seed, --val-fraction); with "
                        "--split-mode xml: which labels_ibug_300W_<split>.xml")
    parser.add_argument("--seed", type=int, default=42, help="--split validation: train.py's --seed")
    parser.add_argument("--val-fraction", type=float, default=0.05,
                        help="--split validation: train.py's --val-fraction")
    parser.add_argument("--split-mode", choices=("standard", "xml"), default="standard",
                        help="standard: the 300-W parts by path, as train.py splits (default); "
                        "xml: dlib's XML file as listed (its test file is mostly training images)")
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help=".h5, .weights.h5 or .tflite")
    parser.add_argument("--compare", nargs="+", metavar="MODEL", default=[],
                        help="also score these models on the same faces, each against --model face by face")
    parser.add_argument("--detector", choices=sorted(DETECTORS), help="use a detector's boxes, not the dataset's")
    parser.add_argument("--flip-average", action="store_true", help="test-time flip averaging")
    parser.add_argument("--refine", action="store_true",
                        help="a second pass framed by the first pass's points, averaged with it (predict.py --refine)")
    parser.add_argument("--with-mesh", action="store_true",
                        help="average with MediaPipe's face mesh mapped to the 68 points (predict.py --with-mesh)")
    parser.add_argument("--refine-eyes", action="store_true",
                        help="look at each eye again at twice the resolution (predict.py --refine-eyes)")
    parser.add_argument("--face-scores", action="store_true",
                        help="also report the face score on the faces and on boxes moved off them")
    parser.add_argument("--json", help="write the figures as JSON here")
    parser.add_argument("--plot", help="write the CED curve as a PNG here")
    parser.add_argument("--fit-detector", choices=sorted(DETECTORS),
                        help="instead of evaluating: fit the detector's box mapping on these faces")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.plot and Path(args.plot).suffix.lower() not in PLOT_SUFFIXES:
        parser.error(f"--plot {args.plot}: write the plot to a {', '.join(PLOT_SUFFIXES)} file")
    if args.json and args.plot and os.path.realpath(args.json) == os.path.realpath(args.plot):
        parser.error(f"--json and --plot name the same file, {args.json}")
    inputs = ([args.data_dir, *Path(args.data_dir).glob("labels_ibug_300W_*.xml")]
              + [p for model in [args.model, *args.compare] for p in model_files(model)])
    for flag, path in (("--json", args.json), ("--plot", args.plot)):
        fault = path and output_fault(flag, path, inputs)
        if fault:  # before the evaluation, not after it
            print(f"error: {fault}", file=sys.stderr)
            return 2
    try:
        faces = evaluation_faces(args.data_dir, args.split, args.split_mode, args.seed, args.val_fraction)
        if args.fit_detector:
            print(json.dumps(fit_detector_boxes(make_detector(args.fit_detector), faces), indent=1))
            return 0
        if any(str(model).endswith(".h5") for model in [args.model, *args.compare]):
            from train import quiet_tensorflow_startup

            quiet_tensorflow_startup()  # a Keras model: TensorFlow, without its start-up notes
        runner = load_landmark_model(args.model)
        detector = make_detector(args.detector) if args.detector else None
        # Found once: every model of --compare is scored on the same boxes.
        boxes = face_boxes(faces, detector)
        mesh = None
        if args.with_mesh:
            import face_mesh

            mesh = face_mesh.MeshLandmarks()
        import parts

        part_refiners = [parts.PartRefiner(parts.EYES)] if args.refine_eyes else []
        report = evaluate(runner, faces, detector, args.flip_average, args.refine, boxes, mesh, part_refiners)
        if args.face_scores:
            report["face_scores"] = face_score_check(runner, faces)
        compared = []
        for other_path in args.compare:
            other = evaluate(load_landmark_model(other_path), faces, detector, args.flip_average,
                             args.refine, boxes, mesh, part_refiners)
            compared.append((other_path, other["nme_ion"],
                             paired_difference(report["_errors"], other["_errors"])))
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    report["model"] = str(args.model)
    report["data"] = f"{args.data_dir} ({args.split}, {args.split_mode} split)"
    report["scored"] = scored_parts(faces)
    print(f"model: {args.model}\ndata: {report['data']}\nscored: "
          + ", ".join(f"{part} {count}" for part, count in report["scored"].items()))
    print(format_report(report))
    if "face_scores" in report:
        print(format_face_scores(report["face_scores"]))
    if compared:
        report["compared"] = [{"model": name, "nme_ion": value, "difference": d} for name, value, d in compared]
        print(format_comparison(str(args.model), report, compared))
    if args.json:
        Path(args.json).write_text(json.dumps({k: v for k, v in report.items() if not k.startswith("_")}, indent=1))
    if args.plot:
        plot_ced(report, args.plot, title=f"{Path(args.model).name} on {report['data']}")
    return 0 if report["subsets"] else 3


if __name__ == "__main__":
    sys.exit(main())
