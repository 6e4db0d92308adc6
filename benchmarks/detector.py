"""Which face sizes each BlazeFace model finds: real 300-W faces rescaled to a range of face
widths and placed in a wide and a tall canvas, the fraction found per width.

    python -m benchmarks.detector                         # LFPW-test of ../shared/data/300w_subset
    python -m benchmarks.detector --faces 224 --json sizes.json
    python -m benchmarks.detector --roll 25 40            # also: tilted heads, with/without roll correction

Each photo is scaled so that its dataset face box is W pixels wide, and pasted with the face
at the centre of a grey canvas (1280x720 and 720x1280 by default: what matters to the
detector is the face's width against the canvas's longer side, since the whole canvas is
letterboxed into the model's square input). A face counts as found when a detection's own
box overlaps the scaled dataset box by IoU >= 0.3. "auto" is BlazeFaceDetector's default
(the short range model, or the full range one when the short range one finds nothing or only
small faces).
Also prints the detectors' time per canvas (one thread, median).

``--mixed`` also measures faces of several sizes in one frame: one face at 30 % of a
1280x720 frame's width and four smaller ones beside it (6, 8, 10, 12 % of the width), the
small faces found by auto and by one model per photo (the short range model's answer alone
whenever all its faces are large); and the time of both on the split's photos.

``--roll A ...`` also turns each photo by +-A degrees (the annotation with it) and runs the
whole pipeline (BlazeFace auto, int8 landmark model): NME of the points with the crop turned
upright by the detected roll, and without (same box, roll 0).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

import evaluate
import geometry
from benchmarks.landmarks import describe_machine
from face_detector import BLAZEFACE_SPECS, BlazeFaceDetector, BlazeFaceModel

REPO = Path(__file__).resolve().parents[1]
FACE_WIDTHS = (16, 20, 24, 28, 32, 40, 48, 64, 80, 96, 128, 160, 200, 240, 320, 400)
CANVASES = {"wide": (1280, 720), "tall": (720, 1280)}


def place_face(image_bgr: np.ndarray, box_xywh, face_width: float, canvas_wh, fill: int = 128):
    """The photo scaled so that the box is face_width wide and pasted with the box centred on
    a canvas (clipped at its edges). Returns (canvas, box in canvas pixels)."""
    x, y, w, h = box_xywh
    scale = face_width / w
    size = (max(1, round(image_bgr.shape[1] * scale)), max(1, round(image_bgr.shape[0] * scale)))
    scaled = cv2.resize(image_bgr, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    sx, sy = size[0] / image_bgr.shape[1], size[1] / image_bgr.shape[0]
    bx, by, bw, bh = x * sx, y * sy, w * sx, h * sy  # box edges scale with the image's
    width, height = canvas_wh
    ox, oy = round(width / 2 - (bx + bw / 2)), round(height / 2 - (by + bh / 2))
    canvas = np.full((height, width, 3), fill, np.uint8)
    x0, y0 = max(0, ox), max(0, oy)
    x1, y1 = min(width, ox + size[0]), min(height, oy + size[1])
    canvas[y0:y1, x0:x1] = scaled[y0 - oy:y1 - oy, x0 - ox:x1 - ox]
    return canvas, (bx + ox, by + oy, bw, bh)


def found(detect, image, box_xywh) -> tuple[bool, float]:
    """(the face found, seconds) for a function image -> boxes (x, y, w, h)."""
    started = time.perf_counter()
    boxes = detect(image)
    seconds = time.perf_counter() - started
    return any(evaluate.box_iou(box, box_xywh) >= 0.3 for box in boxes), seconds


def rotate_photo(image_bgr: np.ndarray, landmarks_px: np.ndarray, angle_deg: float):
    """The photo turned counter-clockwise (on screen) by angle_deg about its centre, on a
    canvas large enough to hold it, and its landmarks [68, 2] moved with it."""
    height, width = image_bgr.shape[:2]
    side = int(np.ceil(np.hypot(width, height)))
    matrix = cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), angle_deg, 1.0)
    matrix[:, 2] += [(side - width) / 2, (side - height) / 2]
    rotated = cv2.warpAffine(image_bgr, matrix, (side, side), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    return rotated, landmarks_px @ matrix[:, :2].T + matrix[:, 2]


def bench_roll(faces, angles) -> list[dict]:
    import dataset
    from predict import LandmarkModel

    model, detector = LandmarkModel(threads=1), BlazeFaceDetector("auto", threads=1)
    rows = []
    for angle in angles:
        upright, tilted, roll_errors, missed = [], [], [], 0
        for face in faces:
            photo, truth = rotate_photo(dataset.read_image_bgr(face.image_path), face.landmarks_px, angle)
            detection = evaluate.match_detection(detector.detect(photo), dataset.replace(face, landmarks_px=truth))
            if detection is None:
                missed += 1
                continue
            roll_errors.append(abs(detection.roll_deg - geometry.roll_from_landmarks(truth)))
            for errors, roll in ((upright, detection.roll_deg), (tilted, 0.0)):
                points = model.predict_face(photo, detection.training_box_xywh, roll).landmarks_px
                errors.append(evaluate.nme(points[None], truth[None])[0])
        rows.append({"angle_deg": angle, "faces": len(faces), "missed": missed,
                     "nme_roll_corrected": float(np.mean(upright)), "nme_not_corrected": float(np.mean(tilted)),
                     "median_roll_error_deg": float(np.median(roll_errors))})
    return rows


def one_model_auto(short, full):
    """One model per photo: the short range model's answer when all its faces are at least
    SHORT_RANGE_MIN_WIDTH of the longer side, else the full range model's alone (auto without
    small_faces_beside)."""
    def detect(image):
        boxes = short.detect_raw(image)
        if boxes and all(b[2] >= BlazeFaceDetector.SHORT_RANGE_MIN_WIDTH * max(image.shape[:2]) for b in boxes):
            return boxes
        return full.detect_raw(image)
    return detect


def bench_mixed(faces, small_widths=(0.06, 0.08, 0.10, 0.12), frames: int = 8) -> dict:
    """Small faces beside a large one (see the module docstring): per small width, the small
    faces and the large faces found by each of {auto, one-model auto, full};
    then the median time per photo of auto and one-model auto on the photos of ``faces``."""
    import dataset

    short, full, auto = (BlazeFaceDetector(r, threads=1) for r in ("short", "full", "auto"))
    detectors = {"auto": auto.detect_raw, "one_model_auto": one_model_auto(short, full), "full": full.detect_raw}
    width, height = 1280, 720
    rows = []
    for small_width in small_widths:
        row = {"small_width": small_width, "small_faces": 0, **{name: 0 for name in detectors},
               **{f"large_{name}": 0 for name in detectors}}
        for frame in range(frames):
            group = [faces[(5 * frame + k) % len(faces)] for k in range(5)]
            canvas = np.full((height, width, 3), 128, np.uint8)
            half, large_box = place_face(dataset.read_image_bgr(group[0].image_path), group[0].box_xywh,
                                         0.3 * width, (width // 2, height))
            canvas[:, :width // 2] = half
            small_boxes = []
            for k, face in enumerate(group[1:]):
                tile, box = place_face(dataset.read_image_bgr(face.image_path), face.box_xywh,
                                       small_width * width, (width // 4, height // 2))
                x0, y0 = width // 2 + (k % 2) * width // 4, (k // 2) * height // 2
                canvas[y0:y0 + height // 2, x0:x0 + width // 4] = tile
                small_boxes.append((box[0] + x0, box[1] + y0, box[2], box[3]))
            row["small_faces"] += len(small_boxes)
            for name, detect in detectors.items():
                boxes = detect(canvas)
                row[name] += sum(any(evaluate.box_iou(b, t) >= 0.3 for b in boxes) for t in small_boxes)
                row[f"large_{name}"] += any(evaluate.box_iou(b, large_box) >= 0.3 for b in boxes)
        rows.append(row)
    times = {"auto": [], "one_model_auto": []}
    for path in sorted({f.image_path for f in faces}):
        image = dataset.read_image_bgr(path)
        for name in times:
            started = time.perf_counter()
            detectors[name](image)
            times[name].append(time.perf_counter() - started)
    return {"rows": rows, "photos": len(times["auto"]),
            "ms_per_photo": {name: round(1000 * statistics.median(t), 2) for name, t in times.items()}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.detector",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "300w_subset"))
    parser.add_argument("--split", default="test")
    parser.add_argument("--faces", type=int, default=60, help="faces used (evenly spread over the split)")
    parser.add_argument("--roll", type=float, nargs="*", default=[],
                        help="also test photos turned by +- these angles (degrees)")
    parser.add_argument("--mixed", action="store_true",
                        help="only faces of several sizes in one frame, and auto's time per photo")
    parser.add_argument("--json", help="write the table as JSON here")
    args = parser.parse_args(argv)

    import dataset

    cv2.setNumThreads(1)
    faces = evaluate.evaluation_faces(args.data_dir, args.split)
    if args.mixed:
        mixed = bench_mixed(faces)
        print(f"one face at 30 % of a 1280x720 frame's width, four smaller ones beside it; {args.data_dir} "
              f"({args.split}); machine: {describe_machine()}")
        print(f"{'small width':>12}{'small faces found: auto':>25}{'one-model auto':>16}{'full':>6}"
              f"{'large faces found: auto':>25}{'one-model auto':>16}{'full':>6}  (of 32 small, 8 large)")
        for row in mixed["rows"]:
            print(f"{100 * row['small_width']:>11.0f}%{row['auto']:>25}{row['one_model_auto']:>16}{row['full']:>6}"
                  f"{row['large_auto']:>25}{row['large_one_model_auto']:>16}{row['large_full']:>6}")
        print(f"median time per photo on its {mixed['photos']} photos (one thread): auto "
              f"{mixed['ms_per_photo']['auto']} ms, one-model auto {mixed['ms_per_photo']['one_model_auto']} ms")
        if args.json:
            Path(args.json).write_text(json.dumps({**mixed, "machine": describe_machine()}, indent=1))
        return 0
    faces = [faces[i] for i in np.linspace(0, len(faces) - 1, min(args.faces, len(faces))).round().astype(int)]
    models = {name: BlazeFaceModel(spec, threads=1) for name, spec in BLAZEFACE_SPECS.items()}
    detectors = {name: (lambda image, m=model: [(b[0], b[1], b[2] - b[0], b[3] - b[1])
                                                 for b in m.detect(image)[0]])
                 for name, model in models.items()}
    detectors["auto"] = BlazeFaceDetector("auto", threads=1).detect_raw
    hits = {(c, w, r): 0 for c in CANVASES for w in FACE_WIDTHS for r in detectors}
    times = {name: [] for name in detectors}
    for face in faces:
        image = dataset.read_image_bgr(face.image_path)
        for canvas_name, canvas_wh in CANVASES.items():
            for width in FACE_WIDTHS:
                canvas, box = place_face(image, face.box_xywh, width, canvas_wh)
                for name, detect in detectors.items():
                    hit, seconds = found(detect, canvas, box)
                    hits[canvas_name, width, name] += hit
                    times[name].append(seconds)

    print(f"{len(faces)} faces of {args.data_dir} ({args.split}), each rescaled to each face width and "
          f"centred on a grey canvas; machine: {describe_machine()}")
    header = "".join(f"{c + ' ' + r:>12}" for c in CANVASES for r in ("short", "full", "auto"))
    print(f"{'face width px':>14}{'% of long side':>16}{header}")
    rows = []
    for width in FACE_WIDTHS:
        rates = {f"{c}_{r}": hits[c, width, r] / len(faces) for c in CANVASES for r in ("short", "full", "auto")}
        rows.append({"face_width_px": width, "fraction_of_long_side": width / max(CANVASES["wide"]), **rates})
        print(f"{width:>14}{100 * width / max(CANVASES['wide']):>15.1f}%"
              + "".join(f"{100 * v:>11.0f}%" for v in rates.values()))
    ms = {name: round(1000 * statistics.median(t), 2) for name, t in times.items()}
    print(f"detector time per canvas (letterbox, colour conversion, model, decoding; one thread, "
          f"median): short {ms['short']} ms, full {ms['full']} ms, auto {ms['auto']} ms")
    roll_rows = bench_roll(faces, [s * a for a in args.roll for s in (1, -1)])
    if roll_rows:
        print(f"\nphotos turned counter-clockwise by the angle; BlazeFace auto + int8 model; NME io %")
        print(f"{'angle':>7}{'missed':>8}{'roll corrected':>16}{'not corrected':>15}{'roll error':>12}")
    for row in roll_rows:
        print(f"{row['angle_deg']:>7.0f}{row['missed']:>5} /{row['faces']:<3}{100 * row['nme_roll_corrected']:>14.2f}"
              f"{100 * row['nme_not_corrected']:>15.2f}{row['median_roll_error_deg']:>11.1f}°")
    if args.json:
        Path(args.json).write_text(json.dumps({"faces": len(faces), "canvases": CANVASES, "machine": describe_machine(),
                                               "rows": rows, "ms_per_canvas": ms, "roll": roll_rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
