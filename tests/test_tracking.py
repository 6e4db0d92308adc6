"""Tracking in video (tracking.py, predict.py --video): real faces moved along known paths,
so the true points of every frame are known; bad and cut-short videos."""

from __future__ import annotations

import dataclasses
import json
import math

import cv2
import numpy as np
import pytest

from benchmarks import video as bench_video
import dataset
import evaluate
import face_detector
import geometry
import predict
import tracking
from conftest import REPO_DIR, TEST_XML, read_video

INT8_MODEL = REPO_DIR / "models" / "landmarks_int8.tflite"
SMALL_WH = (320, 240)


class CountingDetector:
    """The default detector, counting its calls."""

    def __init__(self):
        self.inner = predict.make_detector()
        self.calls = 0

    def detect(self, image):
        self.calls += 1
        return self.inner.detect(image)


@pytest.fixture(scope="module")
def model():
    return predict.LandmarkModel(INT8_MODEL, threads=1)


@pytest.fixture(scope="module")
def lfpw_faces(subset_dir):
    """Two LFPW test faces: (colour photo, Face)."""
    faces = dataset.parse_dlib_xml(subset_dir / TEST_XML)[:2]
    return [(cv2.imread(face.image_path, cv2.IMREAD_COLOR), face) for face in faces]


def render(canvas_wh, faces_and_poses, face_px: float):
    """A grey canvas with each (photo, Face) placed by its Pose (the face centred at the
    pose's offset from the canvas centre, with 1.3 face sizes of its photo around it, so
    that two faces do not cover each other); returns the BGR frame and the true points
    [faces, 68, 2]."""
    canvas = np.full((canvas_wh[1], canvas_wh[0], 3), bench_video.BACKGROUND, np.uint8)
    truths = []
    for (photo, face), pose in faces_and_poses:
        x, y, w, h = geometry.box_from_landmarks(face.landmarks_px)
        side, centre = max(w, h), np.array([x + w / 2, y + h / 2])
        x0, y0 = (max(0, int(v)) for v in centre - 1.3 * side)
        x1, y1 = (int(v) for v in centre + 1.3 * side)
        matrix = bench_video.pose_matrix(pose, centre - (x0, y0), face_px / side, canvas_wh)
        cv2.warpAffine(photo[y0:y1, x0:x1], matrix, canvas_wh, dst=canvas, flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_TRANSPARENT)
        truths.append(geometry.transform_points(face.landmarks_px - (x0, y0), matrix))
    return canvas, np.array(truths)


def nme(points, truth) -> float:
    return float(evaluate.nme(np.asarray(points)[None], np.asarray(truth)[None])[0])


# ---------------------------------------------------------------------------------------
# Geometry and smoothing, by hand
# ---------------------------------------------------------------------------------------

def test_a_rolled_face_is_boxed_and_cropped_upright(lfpw_face):
    """Rotate real points by a known angle: the box keeps its side, its centre turns with
    the face, and cropping with the measured roll gives level eyes."""
    _, face = lfpw_face
    points = face.landmarks_px.astype(np.float64)
    roll = geometry.roll_from_landmarks(points)
    box = geometry.box_from_landmarks_upright(points, roll)
    pivot = np.array([200.0, 150.0])
    turn = cv2.getRotationMatrix2D(tuple(pivot), 25.0, 1.0)  # 25 degrees counter-clockwise on screen
    turned = geometry.transform_points(points, turn)
    turned_roll = geometry.roll_from_landmarks(turned)
    assert turned_roll == pytest.approx(roll - 25.0, abs=1e-9)
    turned_box = geometry.box_from_landmarks_upright(turned, turned_roll)
    assert turned_box[2] == pytest.approx(box[2]) and turned_box[3] == pytest.approx(box[3])
    centre = np.array(box[:2]) + np.array(box[2:]) / 2
    turned_centre = np.array(turned_box[:2]) + np.array(turned_box[2:]) / 2
    assert np.allclose(turned_centre, geometry.transform_points(centre[None], turn)[0], atol=1e-9)
    in_crop = geometry.transform_points(turned, geometry.crop_matrix(turned_centre, 200.0, 128, turned_roll))
    assert geometry.roll_from_landmarks(in_crop) == pytest.approx(0.0, abs=1e-9)


def test_one_euro_filter_by_hand():
    dt = 1 / 30
    # beta 0: a plain exponential smoother, alpha = 1 / (1 + tau / dt), tau = 1 / (2 pi cutoff).
    alpha = 1 / (1 + (1 / (2 * math.pi * 1.0)) / dt)
    smoother = tracking.OneEuroFilter(min_cutoff=1.0, beta=0.0, d_cutoff=1.0)
    assert smoother(np.zeros((68, 2)), 0.0)[0, 0] == 0.0  # the first value passes through
    for frame in range(1, 6):
        out = smoother(np.ones((68, 2)), frame * dt)
    assert out == pytest.approx(np.full((68, 2), 1 - (1 - alpha) ** 5))
    # Speed is measured in object sizes: the same motion at twice the size, with half the
    # value scale, is filtered identically (twice the values).
    rng = np.random.default_rng(0)
    path = np.cumsum(rng.normal(0, 2, size=(40, 68, 2)), axis=0)
    near = tracking.OneEuroFilter(0.1, 100.0, 1.0)
    far = tracking.OneEuroFilter(0.1, 100.0, 1.0)
    for frame, points in enumerate(path):
        assert np.allclose(near(2 * points, frame * dt, 1 / 200), 2 * far(points, frame * dt, 1 / 100))
    # beta opens the cutoff with speed: on a ramp of 3 face sizes per second the lag shrinks.
    lags = {}
    for beta in (0.0, 100.0):
        smoother = tracking.OneEuroFilter(0.1, beta, 1.0)
        for frame in range(30):
            truth = 3 * 150 * frame * dt
            lags[beta] = truth - smoother(np.full((68, 2), truth), frame * dt, 1 / 150)[0, 0]
    assert lags[100.0] < 0.1 * lags[0.0]


def test_smoothing_steadies_a_still_face_under_camera_noise(model, lfpw_faces):
    """The shown points of a still face move much less from frame to frame than the
    model's own (the noise is new every frame); with smoothing off they are the same."""
    photo, face = lfpw_faces[0]
    frame, _ = render(SMALL_WH, [((photo, face), bench_video.Pose())], face_px=90)
    rng = np.random.default_rng(1)
    noisy = [np.clip(frame + rng.normal(0, 3, frame.shape), 0, 255).astype(np.uint8) for _ in range(16)]
    for smoothing in (True, False):
        tracker = tracking.FaceTracker(model, predict.make_detector(),
                                       tracking.TrackerOptions(smoothing=smoothing))
        faces = [tracker.update(image, index / 30)[0] for index, image in enumerate(noisy)]
        shown = np.array([f.landmarks_px for f in faces[4:]])
        raw = np.array([f.raw_landmarks_px for f in faces[4:]])
        jitter_shown = np.linalg.norm(np.diff(shown, axis=0), axis=-1).mean()
        jitter_raw = np.linalg.norm(np.diff(raw, axis=0), axis=-1).mean()
        if smoothing:
            assert jitter_raw > 0.1 and jitter_shown < 0.5 * jitter_raw, (jitter_shown, jitter_raw)
        else:
            assert np.array_equal(shown, raw)


# ---------------------------------------------------------------------------------------
# The tracker on synthetic clips of real faces
# ---------------------------------------------------------------------------------------

def test_one_face_is_tracked_with_one_id_and_the_detector_rests(model, lfpw_faces):
    """A real face panned, zoomed and rolled by 20 degrees: one id throughout, the points
    near the truth, and the detector run only on the frames the options say."""
    photo, face = lfpw_faces[0]
    path = ([bench_video.Pose()] * 4
            + [bench_video.Pose(dx=float(x), dy=float(x) / 3) for x in bench_video.ease(8, 0, 40)]
            + [bench_video.Pose(dx=40, dy=40 / 3, scale=float(s)) for s in bench_video.ease(6, 1, 1.3)]
            + [bench_video.Pose(dx=40, dy=40 / 3, scale=1.3, angle_deg=float(a))
               for a in bench_video.ease(8, 0, 20)])
    for max_faces, detect_every, expected_calls in ((1, 8, 1), (2, 8, math.ceil(len(path) / 8))):
        detector = CountingDetector()
        tracker = tracking.FaceTracker(model, detector, tracking.TrackerOptions(
            max_faces=max_faces, detect_every=detect_every))
        errors = []
        for index, pose in enumerate(path):
            frame, truths = render(SMALL_WH, [((photo, face), pose)], face_px=90)
            faces = tracker.update(frame, index / 30)
            assert [f.track_id for f in faces] == [0], f"frame {index}"
            assert faces[0].frames_tracked == index + 1
            errors.append(nme(faces[0].raw_landmarks_px, truths[0]))
        # Only frame 0 (nothing tracked) with one face allowed; every 8th frame with two.
        assert detector.calls == expected_calls, (max_faces, detect_every)
        assert max(errors) < 0.06 and np.mean(errors) < 0.04, errors


def test_two_faces_keep_distinct_stable_ids(model, lfpw_faces):
    """Two real faces drifting towards each other: each keeps its own id every frame, and
    the periodic detections do not start new tracks on faces already tracked."""
    detector = CountingDetector()
    tracker = tracking.FaceTracker(model, detector, tracking.TrackerOptions(max_faces=3, detect_every=4))
    id_of = {}
    for index, shift in enumerate(bench_video.ease(12, 0, 20)):
        poses = [bench_video.Pose(dx=-95 + float(shift), dy=-5.0),
                 bench_video.Pose(dx=95 - float(shift), dy=5.0)]
        frame, truths = render(SMALL_WH, list(zip(lfpw_faces, poses)), face_px=80)
        faces = tracker.update(frame, index / 30)
        assert len(faces) == 2, f"frame {index}: {len(faces)} faces"
        for tracked in faces:
            nearest = int(np.argmin([nme(tracked.raw_landmarks_px, truth) for truth in truths]))
            assert nme(tracked.raw_landmarks_px, truths[nearest]) < 0.06
            id_of.setdefault(nearest, tracked.track_id)
            assert id_of[nearest] == tracked.track_id, f"frame {index}: face {nearest} changed id"
    assert sorted(id_of.values()) == [0, 1]
    assert detector.calls == 3  # frames 0, 4, 8: fewer faces than max_faces are tracked


class LooseDetector:
    """A detector whose box sits beside the face: 0.55 face widths to the right (IoU 0.29
    with the face's own box)."""

    def __init__(self, box_xywh):
        x, y, w, h = box_xywh
        self.box = (x + 0.55 * w, y, w, h)

    def detect(self, image):
        return [face_detector.Detection(box_xywh=self.box, score=1.0, keypoints_px=None,
                                        training_box_xywh=self.box, roll_deg=0.0)]


def test_a_loose_detection_beside_a_tracked_face_does_not_start_a_track(model, lfpw_faces):
    """The detection overlaps the track too little to be matched, but the points found from
    it land on the tracked face: no second track."""
    photo, face = lfpw_faces[0]
    frame, truths = render(SMALL_WH, [((photo, face), bench_video.Pose())], face_px=90)
    tracker = tracking.FaceTracker(model, predict.make_detector(),
                                   tracking.TrackerOptions(max_faces=2, detect_every=1))
    assert [f.track_id for f in tracker.update(frame, 0.0)] == [0]
    tracker.detector = LooseDetector(geometry.box_from_landmarks(truths[0]))
    assert tracking.box_iou(tracker.detector.box, geometry.box_from_landmarks(truths[0])) < 0.3
    for index in range(1, 4):
        faces = tracker.update(frame, index / 30)
        assert [f.track_id for f in faces] == [0], f"frame {index}"
        assert nme(faces[0].raw_landmarks_px, truths[0]) < 0.05
    assert tracker.detector_calls == 4


def write_video(path, frames, fps=10, fourcc="mp4v"):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps,
                             (frames[0].shape[1], frames[0].shape[0]))
    for frame in frames:
        writer.write(frame)
    writer.release()


class WithoutFaceScore:
    """The landmark model as one exported without the confidence output: no face score."""

    def __init__(self, model):
        self.model = model

    def predict_face(self, image, box_xywh, roll_deg=0.0):
        prediction = self.model.predict_face(image, box_xywh, roll_deg)
        return dataclasses.replace(prediction, score=None, landmark_confidence=None)


@pytest.mark.parametrize("face_score", ["model's", "proxy"])
def test_a_face_leaving_the_picture_is_dropped_and_not_drawn(model, lfpw_faces, tmp_path, capsys,
                                                             face_score):
    if face_score == "proxy":
        model = WithoutFaceScore(model)
    photo, face = lfpw_faces[0]
    frames, truths = [], []
    for x in [0.0] * 4 + list(bench_video.ease(20, 0, 260)) + [260.0] * 6:
        frame, truth = render(SMALL_WH, [((photo, face), bench_video.Pose(dx=x))], face_px=90)
        frames.append(frame)
        truths.append(truth[0])
    video = tmp_path / "leaving.mp4"
    write_video(video, frames)
    out = tmp_path / "out"
    code = predict.run_video(str(video), model, predict.make_detector(), out)
    assert code == predict.EXIT_OK, capsys.readouterr().err
    records = [json.loads(line) for line in (out / "leaving_landmarks.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in records] == list(range(len(frames)))
    assert all(len(r["faces"]) == 1 for r in records[:4])
    # The first frame where none of the true points is in the picture; K = 2 frames later
    # the track is gone.
    gone = next(i for i, truth in enumerate(truths) if np.all(truth[:, 0] > SMALL_WH[0] - 0.5))
    assert all(not r["faces"] for r in records[gone + 2:]), [len(r["faces"]) for r in records]
    assert all(face["track_id"] == 0 for r in records for face in r["faces"])
    # Nothing drawn on the background after that: the written frames are the input frames
    # up to video compression (the drawing's green and red differ by 100 grey levels).
    drawn, given = read_video(out / "leaving_landmarks.mp4"), read_video(video)
    assert len(drawn) == len(given) == len(frames)
    difference = [np.abs(a.astype(int) - b.astype(int)).max() for a, b in zip(drawn, given)]
    assert difference[0] > 100  # frame 0 does have points drawn on it
    assert max(difference[gone + 2:]) < 40, difference


# ---------------------------------------------------------------------------------------
# predict.py: bad videos, --no-draw
# ---------------------------------------------------------------------------------------

def test_a_video_that_cannot_be_opened_is_named(model, tmp_path, capsys):
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("this is not a video")
    frames = [np.full((120, 160, 3), 40 * i, np.uint8) for i in range(6)]
    cut = tmp_path / "cut.mp4"
    write_video(cut, frames)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])  # an mp4 keeps its index at the end
    for path, fault in ((not_video, "not a video OpenCV can read"), (cut, "cut short"),
                        (tmp_path / "absent.mp4", "no such file")):
        code = predict.run_video(str(path), model, predict.make_detector(), tmp_path / "out")
        assert code == predict.EXIT_BAD_INPUT
        err = capsys.readouterr().err
        assert f"{path}: cannot open video" in err and fault in err
    assert not (tmp_path / "out").exists()


def test_a_video_that_ends_early_keeps_the_frames_done(model, lfpw_faces, tmp_path, capsys):
    photo, face = lfpw_faces[0]
    frames = [render(SMALL_WH, [((photo, face), bench_video.Pose(dx=float(i)))], face_px=90)[0]
              for i in range(12)]
    video = tmp_path / "cut.avi"  # AVI (MJPG): the header says 12 frames, the data stops early
    write_video(video, frames, fourcc="MJPG")
    video.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    out = tmp_path / "out"
    code = predict.run_video(str(video), model, predict.make_detector(), out)
    err = capsys.readouterr().err
    assert code == predict.EXIT_BAD_INPUT
    done = len((out / "cut_landmarks.jsonl").read_text().splitlines())
    assert 0 < done < 12
    assert f"{video}: the video ended after {done} of its 12 frames" in err
    written = read_video(out / "cut_landmarks.mp4")  # released: a playable file
    assert len(written) == done and written[0].shape == frames[0].shape


def test_no_draw_writes_only_the_json(lfpw_face, tmp_path, capsys):
    image_path, _ = lfpw_face
    out = tmp_path / "photos"
    assert predict.main([str(image_path), "--out", str(out), "--no-draw"]) == predict.EXIT_OK
    assert sorted(p.name for p in out.iterdir()) == [f"{image_path.stem}_landmarks.json"]
    record = json.loads((out / f"{image_path.stem}_landmarks.json").read_text())
    assert len(record["faces"]) >= 1 and len(record["faces"][0]["landmarks"]) == 68

    frame = cv2.imread(str(image_path))
    video = tmp_path / "clip.mp4"
    write_video(video, [frame] * 3)
    out = tmp_path / "video"
    assert predict.main(["--video", str(video), "--out", str(out), "--no-draw"]) == predict.EXIT_OK
    assert sorted(p.name for p in out.iterdir()) == ["clip_landmarks.jsonl"]
    lines = [json.loads(line) for line in (out / "clip_landmarks.jsonl").read_text().splitlines()]
    assert [len(line["faces"]) for line in lines] == [1, 1, 1]
    # The video log of docs/json_schema.md: the image JSON's face, its track id, measures, monitor.
    assert set(lines[0]["faces"][0]) == {"track_id", "box", "score", "landmarks", "landmark_confidence",
                                         "pose", "eyes", "mouth", "monitor"}
    assert [line["time_s"] for line in lines] == [0.0, 0.1, 0.2]  # the clip's 10 frames/s
    assert "frames/s" in capsys.readouterr().out


def test_bench_video_tuning_replays_a_smoothed_run_exactly(model, lfpw_faces):
    """benchmarks/video.py --tune smooths the points of one unsmoothed run afterwards; that is
    only honest if it gives exactly the points of a run with smoothing on."""
    photo, face = lfpw_faces[0]
    path = bench_video.clip_path(still=6, move=4, jumps_px=(9.0, 27.0), settle=4)
    options = tracking.TrackerOptions(max_faces=1)
    runs = {smoothing: bench_video.track_clip(
        bench_video.SyntheticClip(photo, face.landmarks_px, path, face_px=90, canvas_wh=SMALL_WH),
        model, predict.make_detector(), dataclasses.replace(options, smoothing=smoothing))
        for smoothing in (False, True)}
    assert not np.isnan(runs[True]["shown"]).any()
    replayed = bench_video.one_euro(runs[False], options.min_cutoff, options.beta, options.d_cutoff)
    assert np.array_equal(replayed, runs[True]["shown"])
    assert not np.array_equal(runs[True]["shown"], runs[True]["raw"])  # the filter did act
