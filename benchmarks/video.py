"""Tracking in video against known ground truth: frames/s, NME per frame, jitter and lag.

    python -m benchmarks.video                     # LFPW-test face 0, 640x480, one thread
    python -m benchmarks.video --json out/video.json  # also write the table as JSON
    python -m benchmarks.video --tune              # grid of One-Euro settings on the same clip

The clip is made from a real 300-W photo (LFPW test, with its human annotation): the photo
is moved, zoomed and rotated along a known path on a 640x480 canvas, and the same affine
map is applied to its 68 points, so the true points of every frame are known. Camera-like
noise (Gaussian, ``--noise`` grey levels per channel, new every frame) is added to every
frame. The path, at 30 frames/s:

- ``still``: the face holds still (jitter is measured here, after ``JITTER_SKIP`` frames);
- ``pan``, ``zoom``, ``roll``: smooth moves (eased), back to the start each time;
- ``jump``, ``big jump``: the face moves sideways by ``--jumps`` face sizes in one frame and
  stays (lag is measured here: frames until the NME is back within ``--lag-margin`` of its
  value before the move; ``-`` when it never is within the stretch).

frames/s counts FaceTracker.update alone (one interpreter thread, no drawing, the frames
already in memory): detection, cropping, the landmark model and the smoothing. With
``--tune``, the clip is tracked once unsmoothed and each One-Euro setting is applied to the
recorded points afterwards: the tracker crops from the unsmoothed points, so the filter
does not change what the model sees, and this is exactly what a run with that setting gives.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

import dataset
import evaluate
import geometry
import predict
import tracking
from benchmarks.landmarks import describe_machine

CANVAS_WH = (640, 480)
FPS = 30.0
JITTER_SKIP = 15  # frames of the still stretch left for the tracker and filter to settle
BACKGROUND = 118  # grey level of the canvas around the photo


def default_data_dir() -> Path:
    root = os.environ.get("LANDMARKS_DATA")
    root = Path(root) if root else Path(__file__).resolve().parents[2] / "shared" / "data"
    return root / "300w_subset"


# ---------------------------------------------------------------------------------------
# The clip
# ---------------------------------------------------------------------------------------

@dataclass
class Pose:
    """Where the face is on the canvas: scale, rotation (degrees, counter-clockwise on
    screen) about the face centre, and the face centre's offset from the canvas centre."""
    scale: float = 1.0
    angle_deg: float = 0.0
    dx: float = 0.0
    dy: float = 0.0


def ease(count: int, start: float, end: float) -> np.ndarray:
    """``count`` values going smoothly (cosine ease) from start to end, end included."""
    t = np.arange(1, count + 1) / count
    return start + (end - start) * (1 - np.cos(math.pi * t)) / 2


JUMPS = ("jump", "big jump")


def clip_path(still: int = 90, move: int = 40, jumps_px=(16.0, 48.0), settle: int = 30):
    """[(segment name, Pose)] per frame: still, pan, zoom, roll, then two sudden moves
    sideways (``jumps_px``, each held ``settle`` frames)."""
    frames = [("still", Pose())] * still
    for x in np.concatenate([ease(move, 0, 120), ease(move, 120, 0)]):
        frames.append(("pan", Pose(dx=float(x), dy=float(x) / 4)))
    for s in np.concatenate([ease(move, 1, 1.35), ease(move, 1.35, 1)]):
        frames.append(("zoom", Pose(scale=float(s))))
    for a in np.concatenate([ease(move, 0, 25), ease(2 * move, 25, -25), ease(move, -25, 0)]):
        frames.append(("roll", Pose(angle_deg=float(a))))
    frames += [("before jump", Pose())] * 15
    offset = 0.0
    for name, jump_px in zip(JUMPS, jumps_px):
        offset += jump_px
        frames += [(name, Pose(dx=offset))] * settle
    return frames


def pose_matrix(pose: Pose, face_centre_xy, base_scale: float, canvas_wh=CANVAS_WH) -> np.ndarray:
    """2x3 map from photo pixels to canvas pixels for one pose."""
    matrix = cv2.getRotationMatrix2D(tuple(float(v) for v in face_centre_xy), pose.angle_deg,
                                     base_scale * pose.scale)
    target = np.array([canvas_wh[0] / 2 + pose.dx, canvas_wh[1] / 2 + pose.dy])
    matrix[:, 2] += target - np.asarray(face_centre_xy, dtype=np.float64)
    return matrix


class SyntheticClip:
    """A real face moved along a path: ``frame(i)`` -> (BGR canvas, true points [68, 2])."""

    def __init__(self, photo_bgr: np.ndarray, landmarks_px: np.ndarray, path, face_px: float = 160.0,
                 noise: float = 3.0, seed: int = 0, canvas_wh=CANVAS_WH):
        self.photo, self.landmarks_px, self.path = photo_bgr, np.asarray(landmarks_px, np.float64), path
        x, y, w, h = geometry.box_from_landmarks(self.landmarks_px)
        self.centre = np.array([x + w / 2, y + h / 2])
        self.base_scale = face_px / max(w, h)
        self.noise, self.canvas_wh = noise, canvas_wh
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.path)

    def frame(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        matrix = pose_matrix(self.path[index][1], self.centre, self.base_scale, self.canvas_wh)
        canvas = cv2.warpAffine(self.photo, matrix, self.canvas_wh, flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=(BACKGROUND,) * 3)
        if self.noise > 0:
            noise = self.rng.standard_normal(canvas.shape, dtype=np.float32) * self.noise
            canvas = np.clip(canvas + noise, 0, 255).astype(np.uint8)
        truth = self.landmarks_px @ matrix[:, :2].T + matrix[:, 2]
        return canvas, truth


def lfpw_face(data_dir: Path, index: int):
    xml = data_dir / "labels_ibug_300W_test.xml"
    if not xml.is_file():
        raise SystemExit(f"error: {xml}: not found; set LANDMARKS_DATA to the folder holding "
                         "300w_subset/ (or pass --data-dir)")
    faces = dataset.parse_dlib_xml(xml)
    face = faces[index]
    photo = cv2.imread(face.image_path, cv2.IMREAD_COLOR)
    if photo is None:
        raise SystemExit(f"error: {face.image_path}: cannot read the photo")
    return photo, face


# ---------------------------------------------------------------------------------------
# Running and measuring
# ---------------------------------------------------------------------------------------

def track_clip(clip: SyntheticClip, model, detector, options: tracking.TrackerOptions) -> dict:
    """Track the clip; per frame the first face's shown and raw points (NaN when no face)."""
    tracker = tracking.FaceTracker(model, detector, options)
    shown = np.full((len(clip), 68, 2), np.nan)
    raw = np.full((len(clip), 68, 2), np.nan)
    sides = np.full(len(clip), np.nan)
    truths = np.zeros((len(clip), 68, 2))
    ids, starts, seconds = [], np.zeros(len(clip), bool), 0.0
    for index in range(len(clip)):
        frame, truths[index] = clip.frame(index)
        started = time.perf_counter()
        faces = tracker.update(frame, index / FPS)
        seconds += time.perf_counter() - started
        ids.append([face.track_id for face in faces])
        if faces:
            shown[index], raw[index] = faces[0].landmarks_px, faces[0].raw_landmarks_px
            # The face size the track's filter scales speed by (the box of its raw points).
            raw_points = faces[0].raw_landmarks_px
            sides[index] = geometry.box_from_landmarks_upright(
                raw_points, geometry.roll_from_landmarks(raw_points))[2]
            starts[index] = faces[0].frames_tracked == 1
    return {"shown": shown, "raw": raw, "sides": sides, "truths": truths, "ids": ids, "starts": starts,
            "seconds": seconds, "detector_calls": tracker.detector_calls, "timings": dict(tracker.timings)}


def measure(points: np.ndarray, truths: np.ndarray, segments: list[str], lag_margin: float) -> dict:
    """NME per frame (mean, max), jitter on the still stretch, lag after the jump.
    ``points``, ``truths``: [frames, 68, 2]; NaN points are frames without a face."""
    found = ~np.isnan(points).any(axis=(1, 2))
    errors = np.full(len(points), np.nan)
    errors[found] = evaluate.nme(points[found], truths[found])
    still = [i for i, name in enumerate(segments) if name == "still"][JITTER_SKIP:]
    steps = np.linalg.norm(np.diff(points[still], axis=0), axis=-1)  # [frames - 1, 68]
    result = {"frames": len(points), "frames_with_face": int(found.sum()),
              "nme_mean": float(np.nanmean(errors)), "nme_max": float(np.nanmax(errors)),
              "jitter_px": float(np.nanmean(steps))}
    for name in JUMPS:
        jump = segments.index(name)
        threshold = float(np.nanmean(errors[jump - 10:jump])) + lag_margin
        settle = jump + segments.count(name)
        back = np.flatnonzero(errors[jump:settle] <= threshold)  # NaN (no face) never counts
        result[f"lag_frames_{name.replace(' ', '_')}"] = int(back[0]) if len(back) else None
    return result


def one_euro(run: dict, min_cutoff: float, beta: float, d_cutoff: float) -> np.ndarray:
    """A run's recorded raw points [frames, 68, 2] smoothed as the tracks' filters would."""
    out = np.full_like(run["raw"], np.nan)
    smoother = None
    for index, (points, ids) in enumerate(zip(run["raw"], run["ids"])):
        if not ids:
            continue
        if run["starts"][index]:  # a track starts (or restarts) with a new filter
            smoother = tracking.OneEuroFilter(min_cutoff, beta, d_cutoff)
        out[index] = smoother(points, index / FPS, 1.0 / run["sides"][index])
    return out


def quality_header() -> str:
    return f"{'NME %':>7}{'max %':>7}{'jitter px':>10}" + "".join(f"{'lag ' + name:>13}" for name in JUMPS)


def quality_cells(row: dict) -> str:
    lags = [row[f"lag_frames_{name.replace(' ', '_')}"] for name in JUMPS]
    return (f"{100 * row['nme_mean']:>7.2f}{100 * row['nme_max']:>7.2f}{row['jitter_px']:>10.3f}"
            + "".join(f"{'-' if lag is None else lag:>13}" for lag in lags))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.video",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--data-dir", default=str(default_data_dir()), help="the 300w_subset folder")
    parser.add_argument("--face", type=int, default=0, help="index of the LFPW test face")
    parser.add_argument("--model", default=str(predict.DEFAULT_MODEL))
    parser.add_argument("--detector", choices=sorted(predict.DETECTORS), default=predict.DEFAULT_DETECTOR)
    parser.add_argument("--face-px", type=float, default=160.0, help="face box side on the canvas")
    parser.add_argument("--noise", type=float, default=3.0, help="camera noise, grey levels (std)")
    parser.add_argument("--jumps", type=float, nargs=2, default=(0.1, 0.3),
                        help="the two sudden moves, in face sizes")
    parser.add_argument("--lag-margin", type=float, default=0.01,
                        help="lag ends when the NME is within this of its value before the jump")
    defaults = tracking.TrackerOptions()
    parser.add_argument("--detect-every", type=int, default=defaults.detect_every)
    parser.add_argument("--max-faces", type=int, default=1,
                        help="1 as in MediaPipe's default: with the face tracked the detector rests")
    parser.add_argument("--min-cutoff", type=float, default=defaults.min_cutoff)
    parser.add_argument("--beta", type=float, default=defaults.beta)
    parser.add_argument("--tune", action="store_true", help="also grid One-Euro settings on the clip")
    parser.add_argument("--json", help="write the results as JSON here")
    args = parser.parse_args(argv)

    photo, face = lfpw_face(Path(args.data_dir), args.face)
    path = clip_path(jumps_px=[jump * args.face_px for jump in args.jumps])
    segments = [name for name, _ in path]
    model = predict.LandmarkModel(args.model, threads=1)
    detector = predict.make_detector(args.detector)
    rows, runs = {}, {}
    for smoothing in (False, True):
        options = tracking.TrackerOptions(detect_every=args.detect_every, max_faces=args.max_faces,
                                          smoothing=smoothing, min_cutoff=args.min_cutoff, beta=args.beta)
        clip = SyntheticClip(photo, face.landmarks_px, path, args.face_px, args.noise)
        run = track_clip(clip, model, detector, options)
        name = (f"smoothing on (min_cutoff {args.min_cutoff:g}, beta {args.beta:g})" if smoothing
                else "smoothing off")
        row = measure(run["shown"], run["truths"], segments, args.lag_margin)
        row.update(frames_per_s=len(clip) / run["seconds"], detector_calls=run["detector_calls"],
                   track_ids=sorted({i for ids in run["ids"] for i in ids}),
                   detect_ms_per_frame=1000 * run["timings"]["detect"] / len(clip),
                   landmarks_ms_per_frame=1000 * run["timings"]["landmarks"] / len(clip))
        rows[name], runs[smoothing] = row, run

    print(f"{len(path)} frames {CANVAS_WH[0]}x{CANVAS_WH[1]} from {Path(face.image_path).name} "
          f"(LFPW test), face {args.face_px:g} px, noise {args.noise:g} grey levels, {args.detector} "
          f"detector, detect every {args.detect_every}, max faces {args.max_faces}, one thread, no drawing")
    print(f"machine: {describe_machine()}")
    print(f"{'run':<42}{'frames/s':>9}{'detect ms':>10}{'lm ms':>7}{'det runs':>9}{'ids':>4}"
          + quality_header())
    for name, row in rows.items():
        print(f"{name:<42}{row['frames_per_s']:>9.1f}{row['detect_ms_per_frame']:>10.2f}"
              f"{row['landmarks_ms_per_frame']:>7.2f}{row['detector_calls']:>9}{len(row['track_ids']):>4}"
              + quality_cells(row))
    print(f"ms are per frame; jitter: mean frame-to-frame movement of the 68 points over "
          f"{segments.count('still') - JITTER_SKIP} still frames (the truth does not move); lag: frames "
          f"after a sudden move of {args.jumps[0]:g} / {args.jumps[1]:g} face sizes until NME <= its value "
          f"before + {100 * args.lag_margin:g} % (0: already on the frame of the move)")

    tuning = []
    if args.tune:
        raw = runs[False]
        print("\nOne-Euro settings applied to the unsmoothed run's points (see the docstring):")
        print(f"{'min_cutoff':>11}{'beta':>7}" + quality_header())
        for min_cutoff in (0.05, 0.1, 0.3, 1.0, 3.0):
            for beta in (3.0, 10.0, 30.0, 100.0, 300.0):
                result = measure(one_euro(raw, min_cutoff, beta, defaults.d_cutoff), raw["truths"], segments,
                                 args.lag_margin)
                result.update(min_cutoff=min_cutoff, beta=beta)
                tuning.append(result)
                print(f"{min_cutoff:>11g}{beta:>7g}" + quality_cells(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(
            {"machine": describe_machine(), "photo": face.image_path, "frames": len(path),
             "canvas": list(CANVAS_WH), "face_px": args.face_px, "noise": args.noise,
             "detector": args.detector, "detect_every": args.detect_every, "max_faces": args.max_faces,
             "rows": rows, "tuning": tuning}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
