"""How well the eye aspect ratio (EAR) of the predicted points tells closed eyes from open.

    python -m benchmarks.eyes                                   # both sets, from ../shared/data
    python -m benchmarks.eyes --data-dir /path/to/data --json

Two sets:

- ``yale_eyes/``: real photos labelled by eye state (closed: both eyes shut; open; wink: one
  eye shut, which one not recorded). The face is found by the detector (predict.py's
  default), its points predicted, and the EAR measured: the mean of both eyes for closed
  against open, the smaller eye's for wink against open.
- ``300w_subset/`` (the annotated test faces, framed by the dataset's box as
  benchmarks/measures.py does): a face counts as closed-eyed when the EAR of its annotated
  points is below the threshold; the EAR of the predicted points is scored against that.

For each: ROC AUC (the chance that a closed-eyed face has a lower EAR than an open-eyed one;
ties count half), and at the threshold (``--ear-close``, the monitor's default 0.21) the
share of closed eyes missed (EAR at or above it) and of open eyes taken for closed (below
it). Also the threshold that best separates the set (most correct of closed and open,
each weighted equally), to compare.

``--as-video``: each Yale photo also held still for 12 s at 10 frames/s in front of the
monitor (monitor.Monitor, default thresholds): how many closed-eyed photos raise a drowsy
event and how soon, and how many open-eyed ones raise any event.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

import dataset
import face_measures
import monitor
import predict

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"


def roc_auc(closed_ears, open_ears) -> float:
    """P(EAR of a closed-eyed face < EAR of an open-eyed one), ties counted half: the area
    under the ROC curve of 'EAR below t' as the closed-eye detector. [N], [M] -> float."""
    closed, opened = np.asarray(closed_ears, float)[:, None], np.asarray(open_ears, float)[None, :]
    return float(np.mean((closed < opened) + 0.5 * (closed == opened)))


def error_rates(closed_ears, open_ears, threshold: float) -> dict:
    """At ``threshold``: closed eyes missed (EAR >= t) and open eyes taken for closed (< t)."""
    closed, opened = np.asarray(closed_ears, float), np.asarray(open_ears, float)
    return {"threshold": threshold, "closed_missed": float(np.mean(closed >= threshold)),
            "open_flagged": float(np.mean(opened < threshold))}


def best_threshold(closed_ears, open_ears) -> float:
    """The threshold (midway between two EARs seen) with the highest balanced accuracy."""
    values = np.unique(np.concatenate([closed_ears, open_ears]))
    candidates = (values[1:] + values[:-1]) / 2 if len(values) > 1 else values
    scores = [1 - (rates["closed_missed"] + rates["open_flagged"]) / 2
              for rates in (error_rates(closed_ears, open_ears, t) for t in candidates)]
    return float(candidates[int(np.argmax(scores))])


def separation(name: str, closed_ears, open_ears, threshold: float, **extra) -> dict:
    return {"set": name, "closed": len(closed_ears), "open": len(open_ears),
            "closed_ear_mean": float(np.mean(closed_ears)), "open_ear_mean": float(np.mean(open_ears)),
            "roc_auc": roc_auc(closed_ears, open_ears), **error_rates(closed_ears, open_ears, threshold),
            "best_threshold": best_threshold(closed_ears, open_ears), **extra}


def eye_ears(measures: dict) -> tuple[float, float] | None:
    eyes = measures["eyes"]
    return None if eyes["left_ear"] is None else (eyes["left_ear"], eyes["right_ear"])


def yale_ears(folder: Path, model, detector) -> dict:
    """{folder name: [(left EAR, right EAR) of each photo]}; photos without a face or
    without measures are counted under 'unmeasured'."""
    ears, unmeasured = {}, []
    for state in ("closed", "wink", "open"):
        ears[state] = []
        for path in sorted((folder / state).glob("*.png")):
            image = predict.load_image(path)
            predictions = model.predict_detections(image, detector.detect(image))
            pair = (eye_ears(face_measures.measure_face(predictions[0].landmarks_px, image.shape[1::-1]))
                    if predictions else None)
            if pair is None:
                unmeasured.append(f"{state}/{path.name}")
            else:
                ears[state].append(pair)
    ears["unmeasured"] = unmeasured
    return ears


def w300_ears(xml_path: Path, model) -> tuple[list, list]:
    """(annotated, predicted) mean EAR of each face measured on both."""
    annotated, predicted = [], []
    image_path, image = None, None
    for face in dataset.parse_dlib_xml(xml_path):
        if face.image_path != image_path:
            image_path, image = face.image_path, predict.load_image(face.image_path)
        size = image.shape[1::-1]
        truth = eye_ears(face_measures.measure_face(np.asarray(face.landmarks_px, float), size))
        ours = eye_ears(face_measures.measure_face(model.predict_box(image, face.box_xywh), size))
        if truth is not None and ours is not None:
            annotated.append(float(np.mean(truth)))
            predicted.append(float(np.mean(ours)))
    return annotated, predicted


def still_video_events(folder: Path, model, detector, seconds: float = 12.0, fps: float = 10.0,
                       blink_options=None) -> dict:
    """Each photo of ``folder`` as a still video: {photo name: [(event type, time_s)]}."""
    events = {}
    for path in sorted(folder.glob("*.png")):
        image = predict.load_image(path)
        watcher = monitor.Monitor(model, detector, blink_options=blink_options)
        events[path.name] = [(event["type"], event["time_s"]) for index in range(int(seconds * fps))
                             for event in watcher.process(image, index / fps)[1]]
    return events


def video_report(data_dir: Path, model, detector, blink_options=None) -> dict:
    closed = still_video_events(data_dir / "yale_eyes" / "closed", model, detector, blink_options=blink_options)
    opened = still_video_events(data_dir / "yale_eyes" / "open", model, detector, blink_options=blink_options)
    drowsy_at = [next((t for kind, t in found if kind == "drowsy"), None) for found in closed.values()]
    raised = [t for t in drowsy_at if t is not None]
    return {"closed_photos": len(closed), "closed_drowsy": len(raised),
            "closed_drowsy_after_s": [min(raised), max(raised)] if raised else None,
            "open_photos": len(opened), "open_with_events": sorted(name for name, found in opened.items() if found)}


def evaluate(data_dir: Path, model, detector, threshold: float, split: str = "test") -> list[dict]:
    reports = []
    yale = yale_ears(data_dir / "yale_eyes", model, detector)
    opened = [float(np.mean(pair)) for pair in yale["open"]]
    reports.append(separation("yale_eyes: closed vs open (mean of both eyes)",
                              [float(np.mean(pair)) for pair in yale["closed"]], opened, threshold,
                              unmeasured=yale["unmeasured"]))
    reports.append(separation("yale_eyes: closed vs open (the smaller eye)", [min(pair) for pair in yale["closed"]],
                              [min(pair) for pair in yale["open"]], threshold))
    reports.append(separation("yale_eyes: wink vs open (the smaller eye)", [min(pair) for pair in yale["wink"]],
                              [min(pair) for pair in yale["open"]], threshold))
    annotated, predicted = w300_ears(data_dir / "300w_subset" / f"labels_ibug_300W_{split}.xml", model)
    closed = np.asarray(annotated) < threshold
    reports.append(separation(f"300w_subset {split}: annotated EAR < {threshold:g} vs not (predicted EAR)",
                              list(np.asarray(predicted)[closed]), list(np.asarray(predicted)[~closed]), threshold))
    return reports


def format_reports(reports: list[dict]) -> str:
    lines = ["| set | closed | open | EAR closed / open (mean) | ROC AUC | closed missed | open flagged | "
             "best threshold |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in reports:
        lines.append(f"| {r['set']} | {r['closed']} | {r['open']} | {r['closed_ear_mean']:.3f} / "
                     f"{r['open_ear_mean']:.3f} | {r['roc_auc']:.3f} | {100 * r['closed_missed']:.0f} % | "
                     f"{100 * r['open_flagged']:.1f} % | {r['best_threshold']:.3f} |")
    lines.append(f"closed missed, open flagged: at EAR threshold {reports[0]['threshold']:g}")
    unmeasured = reports[0].get("unmeasured")
    if unmeasured:
        lines.append(f"yale_eyes photos without a face or measures (left out): {', '.join(unmeasured)}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.eyes", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR),
                        help="folder holding yale_eyes/ and 300w_subset/ (default: ../shared/data)")
    parser.add_argument("--split", default="test", help="300w_subset's labels_ibug_300W_<split>.xml")
    parser.add_argument("--model", default=str(predict.DEFAULT_MODEL))
    parser.add_argument("--ear-close", type=float, default=face_measures.BlinkOptions.ear_close,
                        help="the threshold the error rates are given at, and the monitor's with "
                        "--as-video (default: the monitor's)")
    parser.add_argument("--ear-open", type=float, default=face_measures.BlinkOptions.ear_open,
                        help="with --as-video: the monitor's EAR above which the eyes are open again")
    parser.add_argument("--refine-eyes", action="store_true", help="with the eye model, as predict.py --refine-eyes")
    parser.add_argument("--with-mesh", action="store_true", help="averaged with the face mesh, as predict.py --with-mesh")
    parser.add_argument("--as-video", action="store_true", help="also each Yale photo as a still video (above)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if not 0 < args.ear_close < args.ear_open:
        parser.error(f"--ear-close {args.ear_close:g} and --ear-open {args.ear_open:g}: need 0 < close < open")
    data_dir = Path(args.data_dir)
    for needed in (data_dir / "yale_eyes" / "closed", data_dir / "300w_subset" / f"labels_ibug_300W_{args.split}.xml"):
        if not needed.exists():
            print(f"error: {needed}: not found (--data-dir names the folder holding yale_eyes/ and 300w_subset/)",
                  file=sys.stderr)
            return 2
    try:
        model = predict.LandmarkModel(args.model, mesh=predict.load_mesh() if args.with_mesh else None,
                                      part_refiners=predict.load_part_refiners(["eyes"] if args.refine_eyes else []))
        detector = predict.make_detector()
    except predict.InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    reports = evaluate(data_dir, model, detector, args.ear_close, args.split)
    video = (video_report(data_dir, model, detector,
                          face_measures.BlinkOptions(ear_close=args.ear_close, ear_open=args.ear_open))
             if args.as_video else None)
    if args.json:
        print(json.dumps(reports + ([video] if video else []), indent=1))
        return 0
    print(format_reports(reports))
    if video:
        after = video["closed_drowsy_after_s"]
        print(f"as still videos: {video['closed_drowsy']} of {video['closed_photos']} closed-eyed photos raise "
              f"drowsy" + (f" ({after[0]:.1f}-{after[1]:.1f} s in)" if after else "") + f"; "
              f"{len(video['open_with_events'])} of {video['open_photos']} open-eyed photos raise an event"
              + (f" ({', '.join(video['open_with_events'])})" if video["open_with_events"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
