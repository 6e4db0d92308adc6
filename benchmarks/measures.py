"""How far the face measures from predicted points are from those of the annotated points.

    python -m benchmarks.measures --data-dir ../shared/data/300w_subset          # LFPW test
    python -m benchmarks.measures --data-dir ../shared/data/300w_subset --json

For each annotated face: predict its 68 points (models/landmarks_int8.tflite, the dataset's
box, as predict.py frames it), then compute face_measures.measure_face on the predicted and
on the annotated points, and report the mean absolute difference of each measure (EAR of
both eyes pooled, MAR, yaw, pitch, roll) over the faces where both have values. Also how
well the 3D mean face fits the annotations (mean reprojection error over the inter-ocular
distance) and the spread of the annotated poses.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

import dataset
import face_measures
import predict

NARROW_EYE_EAR = 0.2  # faces whose annotated EAR (mean of both eyes) is below this
MEASURES = ("left_ear", "right_ear", "mar", "yaw", "pitch", "roll")


def flat_measures(measures: dict) -> dict:
    """measure_face's nested dict as {name: value or None}."""
    return {"left_ear": measures["eyes"]["left_ear"], "right_ear": measures["eyes"]["right_ear"],
            "mar": measures["mouth"]["mar"], **{k: measures["pose"][k] for k in ("yaw", "pitch", "roll")}}


def compare(model: predict.LandmarkModel, faces) -> dict:
    """Per-measure mean absolute difference between predicted and annotated points."""
    rows, fit_errors, nulls = [], [], {"predicted": 0, "annotated": 0}
    images: dict[str, np.ndarray] = {}
    for face in faces:
        if face.image_path not in images:
            images = {face.image_path: predict.load_image(face.image_path)}  # one photo at a time
        image = images[face.image_path]
        size = (image.shape[1], image.shape[0])
        predicted = model.predict_box(image, face.box_xywh)
        truth = np.asarray(face.landmarks_px, dtype=np.float64)
        from_pred = flat_measures(face_measures.measure_face(predicted, size))
        from_truth = flat_measures(face_measures.measure_face(truth, size))
        nulls["predicted"] += from_pred["yaw"] is None
        nulls["annotated"] += from_truth["yaw"] is None
        pose = face_measures.head_pose(truth, size)
        interocular = np.linalg.norm(truth[45] - truth[36])
        fit_errors.append(pose.fit_error_px / interocular)
        if from_pred["yaw"] is not None and from_truth["yaw"] is not None:
            rows.append([(from_pred[k], from_truth[k]) for k in MEASURES])
    pairs = np.array(rows, dtype=np.float64)  # [faces, measures, (predicted, annotated)]
    diff = np.abs(pairs[:, :, 0] - pairs[:, :, 1])
    # Narrow or closed eyes are rare in 300-W: how does the model follow them?
    ear_pred, ear_truth = pairs[:, :2, 0].mean(axis=1), pairs[:, :2, 1].mean(axis=1)
    narrow = ear_truth < NARROW_EYE_EAR
    report = {"faces": len(faces), "compared": len(rows), "null_predicted": nulls["predicted"],
              "null_annotated": nulls["annotated"],
              "mean_abs_diff": {"ear": float(diff[:, :2].mean()), "mar": float(diff[:, 2].mean()),
                                "yaw": float(diff[:, 3].mean()), "pitch": float(diff[:, 4].mean()),
                                "roll": float(diff[:, 5].mean())},
              "annotated_abs_mean": {k: float(np.abs(pairs[:, i, 1]).mean()) for i, k in enumerate(MEASURES)},
              "annotated_max_abs": {k: float(np.abs(pairs[:, i, 1]).max()) for i, k in enumerate(MEASURES)},
              "mean_face_fit_error": float(np.mean(fit_errors)),
              "narrow_eyes": {"faces": int(narrow.sum()),
                              "annotated_ear": float(ear_truth[narrow].mean()) if narrow.any() else None,
                              "predicted_ear": float(ear_pred[narrow].mean()) if narrow.any() else None}}
    return report


def format_report(report: dict) -> str:
    diff, spread, peak = report["mean_abs_diff"], report["annotated_abs_mean"], report["annotated_max_abs"]
    lines = [f"{report['compared']} of {report['faces']} faces compared "
             f"(null: {report['null_predicted']} predicted, {report['null_annotated']} annotated)",
             "| measure | mean abs difference | annotated: mean abs value | annotated: max abs value |",
             "| --- | --- | --- | --- |",
             f"| EAR (both eyes) | {diff['ear']:.3f} | {(spread['left_ear'] + spread['right_ear']) / 2:.3f} "
             f"| {max(peak['left_ear'], peak['right_ear']):.3f} |",
             f"| MAR | {diff['mar']:.3f} | {spread['mar']:.3f} | {peak['mar']:.3f} |"]
    lines += [f"| {k} (degrees) | {diff[k]:.2f} | {spread[k]:.1f} | {peak[k]:.1f} |" for k in ("yaw", "pitch", "roll")]
    lines.append(f"3D mean face fitted to the annotations: mean reprojection error "
                 f"{100 * report['mean_face_fit_error']:.1f} % of the inter-ocular distance")
    narrow = report["narrow_eyes"]
    if narrow["faces"]:
        lines.append(f"{narrow['faces']} faces with narrow or closed eyes (annotated EAR < {NARROW_EYE_EAR}): "
                     f"annotated EAR {narrow['annotated_ear']:.3f}, predicted {narrow['predicted_ear']:.3f} on average")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.measures",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--data-dir", required=True, help="folder holding labels_ibug_300W_test.xml")
    parser.add_argument("--split", default="test", help="labels_ibug_300W_<split>.xml")
    parser.add_argument("--model", default=str(predict.DEFAULT_MODEL))
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    xml_path = Path(args.data_dir) / f"labels_ibug_300W_{args.split}.xml"
    try:
        faces = dataset.parse_dlib_xml(xml_path)
        model = predict.LandmarkModel(args.model)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    report = compare(model, faces)
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
