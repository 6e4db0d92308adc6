"""A second network as a teacher: MediaPipe's 468-point face mesh, mapped to the 68 iBUG points.

The mesh does not follow the iBUG convention, so a ridge regression from its 468 points to the
68 annotated ones is fitted on the training faces (the validation faces that train.py holds
out are left out of the fit). Both point sets are expressed in a frame set by the mesh itself
(its centre, eye line and size), so the map does not depend on where a face sits in a photo.

The teacher's answer for a face is the mean of the mapped mesh and the landmark model's own
points: the two networks err differently, and their mean is better than either. ``label``
writes that answer for a folder of unannotated photos as a dlib imglab XML file, which
``train.py --extra-train`` adds to the training faces.

    python -m tools.mesh_teacher fit --data-dir ../shared/data/300w_subset --out runs/mesh_to_68.npz
    python -m tools.mesh_teacher label --map runs/mesh_to_68.npz \\
        --images ../shared/data/unlabelled_faces/utkface --out runs/utk_teacher
    python -m tools.mesh_teacher score --map runs/mesh_to_68.npz \\
        --data-dir ../shared/data/300w_subset --split validation

The mesh model ships as ``models/face_mesh.tflite`` (MediaPipe's ``face_landmark.tflite`` from
the ``mediapipe==0.10.14`` wheel, Apache-2.0), and the map fitted by ``fit`` as
``models/mesh_to_68.npz``, which ``predict.py --with-mesh`` uses (face_mesh.py).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
from pathlib import Path
from xml.sax.saxutils import quoteattr

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import geometry  # noqa: E402
import predict  # noqa: E402
from face_mesh import (DEFAULT_MESH_MODEL, FaceMesh, MeshTo68, apply_ridge, fit_ridge,  # noqa: E402
                       mesh_features, mesh_frame, to_frame)

log = logging.getLogger("mesh_teacher")

UNLABELLED_PAD = 0.4  # tight crops are padded by this fraction of their side on each side


def default_mesh_model() -> Path:
    """The shipped mesh model, or the one in an installed mediapipe==0.10.14 wheel."""
    if DEFAULT_MESH_MODEL.is_file():
        return DEFAULT_MESH_MODEL
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{DEFAULT_MESH_MODEL}: not found; the face mesh model also comes with "
                                "the mediapipe==0.10.14 wheel: pip install --no-deps mediapipe==0.10.14")
    return Path(list(spec.submodule_search_locations)[0]) / "modules/face_landmark/face_landmark.tflite"


def teacher_points(mesh_68: np.ndarray, own_68: np.ndarray) -> np.ndarray:
    return (np.asarray(mesh_68, dtype=np.float64) + np.asarray(own_68, dtype=np.float64)) / 2.0


# ---------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------

def training_faces(data_dir, seed: int, val_fraction: float, split: str):
    import dataset

    faces = dataset.load_faces(data_dir, "train")
    train, held = dataset.split_by_image(faces, val_fraction, seed)
    if split == "train":
        return train
    if split == "validation":
        return held
    return dataset.load_faces(data_dir, split)


def meshes_of(faces, mesh: FaceMesh):
    import dataset

    out = []
    for face in faces:
        image = dataset.read_image_bgr(face.image_path)
        out.append(mesh.run(image, face.box_xywh))
    return np.stack(out)


def command_fit(args) -> int:
    faces = training_faces(args.data_dir, args.seed, args.val_fraction, "train")
    mesh = FaceMesh(args.mesh_model or default_mesh_model())
    meshes = meshes_of(faces, mesh)
    features, targets = [], []
    for m, face in zip(meshes, faces):
        frame = mesh_frame(m[:, :2])
        features.append(mesh_features(m, frame))
        targets.append(to_frame(face.landmarks_px, frame).ravel())
    features, targets = np.stack(features), np.stack(targets)
    # alpha chosen by 5-fold cross-validation on the training faces
    folds = np.arange(len(faces)) % 5
    best = None
    for alpha in args.alphas:
        errors = []
        for k in range(5):
            ridge = fit_ridge(features[folds != k], targets[folds != k], alpha)
            pred = apply_ridge(ridge, features[folds == k])
            errors.append(np.linalg.norm((pred - targets[folds == k]).reshape(-1, 2), axis=1).mean())
        score = float(np.mean(errors))
        log.info("alpha %g: cross-validated mean point error %.4f (mesh scale units)", alpha, score)
        if best is None or score < best[1]:
            best = (alpha, score)
    mapper = MeshTo68(fit_ridge(features, targets, best[0]))
    mapper.save(args.out, alpha=best[0], faces=len(faces), seed=args.seed, val_fraction=args.val_fraction)
    print(f"fitted on {len(faces)} training faces (alpha {best[0]:g}); wrote {args.out}")
    return 0


def command_score(args) -> int:
    import evaluate

    faces = training_faces(args.data_dir, args.seed, args.val_fraction, args.split)
    mapper = MeshTo68.load(args.map)
    mesh = FaceMesh(args.mesh_model or default_mesh_model())
    own = predict.LandmarkModel(args.model)
    import dataset

    truth, mapped, ours = [], [], []
    for face in faces:
        image = dataset.read_image_bgr(face.image_path)
        mapped.append(mapper(mesh.run(image, face.box_xywh)))
        ours.append(own.predict_box(image, face.box_xywh))
        truth.append(face.landmarks_px)
    truth, mapped, ours = np.stack(truth), np.stack(mapped), np.stack(ours)
    for name, pred in (("mesh mapped to 68", mapped), ("landmark model", ours),
                       ("teacher (their mean)", teacher_points(mapped, ours))):
        print(f"{name:22s} NME {100 * evaluate.nme(pred, truth).mean():.3f} % on {len(faces)} "
              f"{args.split} faces")
    return 0


def pad_image(image_bgr: np.ndarray, fraction: float = UNLABELLED_PAD) -> np.ndarray:
    """A tight face crop with ``fraction`` of its side added on each side (edge pixels
    repeated), so the framing's context and the chin lie inside the photo."""
    pad = int(round(fraction * max(image_bgr.shape[:2])))
    return cv2.copyMakeBorder(image_bgr, pad, pad, pad, pad, cv2.BORDER_REPLICATE)


def unlabelled_box(padded_shape, fraction: float = UNLABELLED_PAD) -> tuple:
    """The first-pass face box of a padded tight crop: the middle 80 % of the original crop."""
    side = round(max(padded_shape[:2]) / (1 + 2 * fraction))
    pad = (max(padded_shape[:2]) - side) / 2
    return (pad + 0.1 * side, pad + 0.1 * side, 0.8 * side, 0.8 * side)


def command_label(args) -> int:
    import dataset

    mapper = MeshTo68.load(args.map)
    mesh = FaceMesh(args.mesh_model or default_mesh_model())
    own = predict.LandmarkModel(args.model)
    out_dir = Path(args.out)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    paths = sorted(p for p in Path(args.images).iterdir()
                   if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[: args.limit or None]
    entries, rejected = [], 0
    for index, path in enumerate(paths):
        image = pad_image(dataset.read_image_bgr(path))
        height, width = image.shape[:2]
        mesh_points = mesh.run(image, unlabelled_box(image.shape))
        mapped = mapper(mesh_points)
        roll = geometry.roll_from_landmarks(mapped)
        own_box = geometry.box_from_landmarks_upright(mapped, roll)
        ours = own.predict_face(image, own_box, roll).landmarks_px
        points = teacher_points(mapped, ours)
        # the two halves must agree on where the face is: a face one of them lost is left out
        eye_distance = np.linalg.norm(points[36] - points[45])
        disagreement = np.linalg.norm(mapped - ours, axis=1).mean() / eye_distance
        if not (disagreement < args.max_disagreement and np.all(points >= 0)
                and np.all(points[:, 0] <= width - 1) and np.all(points[:, 1] <= height - 1)):
            rejected += 1
            continue
        name = f"images/{path.stem}.png"
        cv2.imwrite(str(out_dir / name), image)
        entries.append((name, geometry.box_from_landmarks(points), points))
        if (index + 1) % 500 == 0:
            log.info("%d of %d photos", index + 1, len(paths))
    write_imglab(out_dir / "teacher_labels.xml", entries)
    print(f"labelled {len(entries)} of {len(paths)} photos ({rejected} left out: the mesh and the "
          f"landmark model disagreed by more than {args.max_disagreement:g} eye distances); "
          f"wrote {out_dir / 'teacher_labels.xml'}")
    return 0


def write_imglab(path: Path, entries) -> None:
    lines = ["<?xml version='1.0' encoding='ISO-8859-1'?>", "<dataset>",
             "<name>teacher labels: mean of the face mesh (mapped to 68 points) and the landmark model</name>",
             "<images>"]
    for name, (x, y, w, h), points in entries:
        lines.append(f"  <image file={quoteattr(name)}>")
        lines.append(f"    <box top='{round(y)}' left='{round(x)}' width='{round(w)}' height='{round(h)}'>")
        lines += [f"      <part name='{i:02d}' x='{px:.2f}' y='{py:.2f}'/>" for i, (px, py) in enumerate(points)]
        lines.append("    </box>")
        lines.append("  </image>")
    lines += ["</images>", "</dataset>", ""]
    tmp = path.with_suffix(".xml.tmp")
    tmp.write_text("\n".join(lines))
    tmp.replace(path)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tools.mesh_teacher", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--mesh-model", default=None, help="face_landmark.tflite (default: models/face_mesh.tflite)")
    common.add_argument("--seed", type=int, default=42, help="train.py's --seed (validation split)")
    common.add_argument("--val-fraction", type=float, default=0.05, help="train.py's --val-fraction")
    fit = sub.add_parser("fit", parents=[common], help="fit the mesh -> 68 map on the training faces")
    fit.add_argument("--data-dir", required=True)
    fit.add_argument("--out", required=True, help="the map (.npz)")
    fit.add_argument("--alphas", type=float, nargs="+", default=[0.01, 0.1, 1.0, 10.0])
    model_default = str(Path(__file__).resolve().parents[1] / "models/landmarks_float32.tflite")
    score = sub.add_parser("score", parents=[common], help="NME of the mapped mesh, the model and their mean")
    score.add_argument("--data-dir", required=True)
    score.add_argument("--map", required=True)
    score.add_argument("--model", default=model_default, help="the landmark model (.tflite)")
    score.add_argument("--split", default="validation", choices=["validation", "test", "common", "train"])
    label = sub.add_parser("label", parents=[common], help="teacher points for a folder of face photos")
    label.add_argument("--images", required=True)
    label.add_argument("--map", required=True)
    label.add_argument("--model", default=model_default, help="the landmark model (.tflite)")
    label.add_argument("--out", required=True, help="folder for teacher_labels.xml and the padded photos")
    label.add_argument("--limit", type=int, default=0, help="only the first N photos (0: all)")
    label.add_argument("--max-disagreement", type=float, default=0.15)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    return {"fit": command_fit, "score": command_score, "label": command_label}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
