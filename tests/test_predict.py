"""predict.py as a Raspberry Pi user runs it: without TensorFlow, on real faces, with bad
inputs among good ones."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

import geometry
import predict
from conftest import REPO_DIR

INT8_MODEL = REPO_DIR / "models" / "landmarks_int8.tflite"


def run_predict(python, *args, cwd=REPO_DIR, timeout=300):
    return subprocess.run([python, str(REPO_DIR / "predict.py"), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def nme_of(points, face) -> float:
    import evaluate

    return float(evaluate.nme(np.asarray(points)[None], face.landmarks_px[None])[0])


def test_predict_without_tensorflow_on_a_real_face(pi_python, lfpw_face, tmp_path):
    image_path, face = lfpw_face
    result = run_predict(pi_python, image_path, "--out", tmp_path, "--json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["image"] == str(image_path)
    assert len(record["faces"]) >= 1
    # The detected face that matches the annotation.
    faces = sorted(record["faces"], key=lambda f: np.linalg.norm(
        np.mean(f["landmarks"], axis=0) - face.landmarks_px.mean(axis=0)))
    found = faces[0]
    assert len(found["box"]) == 4 and len(found["landmarks"]) == 68
    assert all(len(p) == 2 for p in found["landmarks"])
    x, y, w, h = found["box"]
    points = np.array(found["landmarks"])
    margin = 0.25 * w
    assert np.all((points[:, 0] > x - margin) & (points[:, 0] < x + w + margin))
    assert np.all((points[:, 1] > y - margin) & (points[:, 1] < y + h + margin))
    assert nme_of(points, face) < 0.12
    written = json.loads((tmp_path / f"{image_path.stem}_landmarks.json").read_text())
    assert written == record
    drawn = cv2.imread(str(tmp_path / f"{image_path.stem}_landmarks.png"))
    assert drawn.shape == cv2.imread(str(image_path)).shape


def test_predict_with_a_given_box_uses_it(pi_python, lfpw_face, tmp_path):
    image_path, face = lfpw_face
    box = ",".join(str(v) for v in face.box_xywh)
    result = run_predict(pi_python, image_path, "--box", box, "--out", tmp_path, "--json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert len(record["faces"]) == 1 and record["faces"][0]["box"] == list(face.box_xywh)
    assert nme_of(record["faces"][0]["landmarks"], face) < 0.10


def test_no_face_gives_a_message_and_exit_code_3(pi_python, tmp_path):
    blank = tmp_path / "wall.png"
    cv2.imwrite(str(blank), np.full((240, 320, 3), 128, np.uint8))
    result = run_predict(pi_python, blank, "--out", tmp_path / "out")
    assert result.returncode == predict.EXIT_NO_FACE
    assert "wall.png: no face found" in result.stderr


def test_bad_files_are_named_and_do_not_stop_the_good_ones(pi_python, lfpw_face, tmp_path):
    image_path, _ = lfpw_face
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a photo")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(image_path.read_bytes()[:200])
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    out = tmp_path / "out"
    result = run_predict(pi_python, text, image_path, truncated, empty_dir, tmp_path / "missing.png",
                         "--out", out)
    assert result.returncode == predict.EXIT_BAD_INPUT
    for name in ("notes.jpg", "cut.jpg", "empty: directory holds no images", "missing.png"):
        assert name in result.stderr, name
    assert (out / f"{image_path.stem}_landmarks.json").exists()  # the good photo was done


def test_bad_models_are_refused_clearly(pi_python, lfpw_face, tmp_path):
    image_path, _ = lfpw_face
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\x00" * 64)
    junk.with_suffix(".json").write_text(INT8_MODEL.with_suffix(".json").read_text())
    result = run_predict(pi_python, image_path, "--model", junk)
    assert result.returncode == 2 and "junk.tflite: not a TFLite model" in result.stderr

    no_meta = tmp_path / "copy.tflite"
    no_meta.write_bytes(INT8_MODEL.read_bytes())
    result = run_predict(pi_python, image_path, "--model", no_meta)
    assert result.returncode == 2 and "copy.json: framing metadata missing" in result.stderr

    result = run_predict(pi_python, image_path, "--model", tmp_path / "absent.tflite")
    assert result.returncode == 2 and "absent.tflite: model file not found" in result.stderr


def test_a_model_of_the_wrong_shape_is_refused(tmp_path):
    import tensorflow as tf
    import keras

    inputs = keras.Input((64, 64, 1))
    tiny = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(inputs)))
    path = tmp_path / "other.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(tiny).convert())
    path.with_suffix(".json").write_text(INT8_MODEL.with_suffix(".json").read_text())
    with pytest.raises(predict.InputError,
                       match=re.escape("other.tflite: input shape [[1, 64, 64, 1]], expected [1, 128, 128, 1]")):
        predict.LandmarkModel(path)


def test_exif_rotated_grey_and_16_bit_photos(lfpw_face, tmp_path):
    """Orientation is applied (landmarks land on the upright photo), other pixel formats
    give the same answer as the 8-bit colour file."""
    image_path, face = lfpw_face
    model = predict.LandmarkModel(INT8_MODEL)
    upright = predict.load_image(image_path)
    reference = model.predict_box(upright, face.box_xywh)

    # Stored rotated 90 degrees clockwise, with EXIF orientation 8 ("rotate 270 to view").
    stored = Image.fromarray(cv2.cvtColor(np.rot90(upright, k=-1).copy(), cv2.COLOR_BGR2RGB))
    exif = Image.Exif()
    exif[0x0112] = 8
    rotated_path = tmp_path / "rotated.jpg"
    stored.save(rotated_path, exif=exif, quality=98)
    loaded = predict.load_image(rotated_path)
    assert loaded.shape == upright.shape
    assert np.abs(model.predict_box(loaded, face.box_xywh) - reference).mean() < 1.0

    grey = cv2.cvtColor(upright, cv2.COLOR_BGR2GRAY)
    cv2.imwrite(str(tmp_path / "grey.png"), grey)
    cv2.imwrite(str(tmp_path / "deep.png"), grey.astype(np.uint16) * 257)
    rgba = cv2.cvtColor(upright, cv2.COLOR_BGR2BGRA)
    cv2.imwrite(str(tmp_path / "alpha.png"), rgba)
    for name in ("grey.png", "deep.png", "alpha.png"):
        points = model.predict_box(predict.load_image(tmp_path / name), face.box_xywh)
        assert np.abs(points - reference).mean() < 0.5, name


def test_huge_images_are_refused_before_decoding(tmp_path):
    big = tmp_path / "big.png"
    cv2.imwrite(str(big), np.zeros((3000, 3000), np.uint8))
    with pytest.raises(predict.InputError, match="big.png: image too large"):
        predict.load_image(big, max_pixels=5_000_000)


def test_landmarks_map_back_through_the_crop_exactly(lfpw_face):
    """predict_box inverts the same affine map that framed the crop."""
    image_path, face = lfpw_face
    model = predict.LandmarkModel(INT8_MODEL)
    image = predict.load_image(image_path)
    crop, matrix = geometry.frame_face(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), face.box_xywh,
                                       model.image_dim, model.crop_margin, model.crop_shift_y)
    in_crop = model.run(geometry.gray_to_input(crop))
    in_photo = model.predict_box(image, face.box_xywh)
    assert np.allclose(geometry.transform_points(in_photo, matrix), in_crop, atol=1e-6)


def test_video_is_processed_with_fps_reported(pi_python, lfpw_face, tmp_path):
    image_path, _ = lfpw_face
    frame = cv2.imread(str(image_path))
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10,
                             (frame.shape[1], frame.shape[0]))
    for shift in range(8):
        writer.write(np.roll(frame, shift, axis=1))
    writer.release()
    result = run_predict(pi_python, "--video", video, "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert "8 frames" in result.stdout and "frames/s" in result.stdout
    assert (tmp_path / "out" / "clip_landmarks.mp4").stat().st_size > 0


# ---------------------------------------------------------------------------------------
# Hardening (issue 12): outputs never overwrite, boxes and model outputs are checked
# ---------------------------------------------------------------------------------------

def test_output_names_keep_the_whole_stem_and_never_collide_or_hit_an_input(tmp_path):
    out = tmp_path / "photos"
    files = [out / "photo.v2.jpg", tmp_path / "img" / "a.jpg", tmp_path / "img" / "a.png",
             tmp_path / "d1" / "x.jpg", tmp_path / "d2" / "x.jpg",
             out / "b_landmarks.png", out / "b.jpg"]  # b.jpg's natural output is an input
    stems = predict.output_stems(files, out)
    assert [s.name for s in stems] == ["photo.v2_landmarks", "a_landmarks", "a_landmarks-2",
                                       "x_landmarks", "x_landmarks-2", "b_landmarks_landmarks",
                                       "b_landmarks-2"]
    assert all(s.parent == out for s in stems)


def test_predict_writes_one_output_per_input_and_leaves_inputs_alone(pi_python, lfpw_face, tmp_path):
    image_path, face = lfpw_face
    photos = tmp_path / "photos"
    (photos / "d1").mkdir(parents=True)
    (photos / "d2").mkdir()
    photo = cv2.imread(str(image_path))
    versions = {"photo.v2.jpg": photo, "d1/x.jpg": photo, "d2/x.jpg": np.ascontiguousarray(photo[:, ::-1])}
    for name, image in versions.items():
        cv2.imwrite(str(photos / name), image)
    own_png, own_json = photos / "photo.png", photos / "photo.json"  # the user's own files
    own_png.write_bytes(b"mine")
    own_json.write_text("mine")
    box = ",".join(str(v) for v in face.box_xywh)
    result = run_predict(pi_python, photos / "photo.v2.jpg", photos / "d1" / "x.jpg",
                         photos / "d2" / "x.jpg", "--out", photos, "--box", box)
    assert result.returncode == 0, result.stderr
    assert own_png.read_bytes() == b"mine" and own_json.read_text() == "mine"
    written = {name: json.loads((photos / name).read_text())["image"]
               for name in ("photo.v2_landmarks.json", "x_landmarks.json", "x_landmarks-2.json")}
    assert written == {"photo.v2_landmarks.json": str(photos / "photo.v2.jpg"),
                       "x_landmarks.json": str(photos / "d1" / "x.jpg"),
                       "x_landmarks-2.json": str(photos / "d2" / "x.jpg")}
    for name in ("photo.v2_landmarks.png", "x_landmarks.png", "x_landmarks-2.png"):
        assert cv2.imread(str(photos / name)).shape == photo.shape


@pytest.mark.parametrize("box, message", [
    ("nan,0,100,100", "--box wants four finite numbers"),
    ("0,0,inf,100", "--box wants four finite numbers"),
    ("1e12,0,100,100", "does not overlap"),
    ("-500,10,100,100", "does not overlap"),
    ("0,0,20000,20000", "more than 2 times the size"),
])
def test_unusable_boxes_are_refused_with_exit_2(pi_python, lfpw_face, tmp_path, box, message):
    image_path, _ = lfpw_face
    result = run_predict(pi_python, image_path, "--box", box, "--out", tmp_path)
    assert result.returncode == predict.EXIT_BAD_INPUT, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not list(tmp_path.glob("*_landmarks.*"))


def test_a_box_with_a_negative_corner_is_accepted_without_an_equals_sign(lfpw_face, tmp_path, capsys):
    image_path, face = lfpw_face
    x, y, w, h = face.box_xywh
    box = f"{-0.25 * w:g},{y:g},{x + 0.75 * w:g},{h:g}"  # starts left of the photo, overlaps it
    assert predict.main([str(image_path), "--box", box, "--out", str(tmp_path), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["faces"][0]["box"] == [round(float(v), 2) for v in box.split(",")]


def test_out_that_is_a_file_and_threads_0_are_refused_clearly(pi_python, lfpw_face, tmp_path):
    image_path, _ = lfpw_face
    not_a_folder = tmp_path / "out.txt"
    not_a_folder.write_text("keep me")
    result = run_predict(pi_python, image_path, "--out", not_a_folder)
    assert result.returncode == 2 and "out.txt: is a file, not a folder" in result.stderr
    assert not_a_folder.read_text() == "keep me"
    result = run_predict(pi_python, image_path, "--threads", "0", "--out", tmp_path)
    assert result.returncode == 2 and "--threads: wants a whole number from 1 to 64" in result.stderr


def test_a_failed_write_is_reported_not_claimed(lfpw_face, tmp_path, monkeypatch, capsys):
    image_path, face = lfpw_face
    monkeypatch.setattr(predict.cv2, "imwrite", lambda *args, **kwargs: False)
    box = ",".join(str(v) for v in face.box_xywh)
    assert predict.main([str(image_path), "--box", box, "--out", str(tmp_path)]) == predict.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert f"{image_path.stem}_landmarks.png: could not write the annotated image" in err
    assert "face(s) ->" not in err


def model_with_constant_output(path, value: float):
    """A TFLite model of the landmark model's shapes whose 136 outputs are all ``value``
    (NaN: the square root of a negative number, computed at run time)."""
    import keras
    import tensorflow as tf

    inputs = keras.Input((128, 128, 1))
    dense = keras.layers.Dense(136)
    outputs = dense(keras.layers.GlobalAveragePooling2D()(inputs))
    if np.isnan(value):
        outputs = keras.layers.Lambda(lambda t: keras.ops.sqrt(t - 2.0))(outputs)
    model = keras.Model(inputs, outputs)
    dense.set_weights([np.zeros((1, 136), np.float32), np.full(136, 0.0 if np.isnan(value) else value,
                                                               np.float32)])
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    path.with_suffix(".json").write_text(INT8_MODEL.with_suffix(".json").read_text())
    return path


@pytest.mark.parametrize("value, fault", [(np.nan, "non-finite coordinates (136 of 136)"),
                                          (5e6, "a coordinate of 5e+06 crop sides")])
def test_non_finite_or_absurd_model_output_is_an_error_naming_the_model(lfpw_face, tmp_path, capsys,
                                                                        value, fault):
    image_path, face = lfpw_face
    model_path = model_with_constant_output(tmp_path / "broken.tflite", value)
    model = predict.LandmarkModel(model_path)
    with pytest.raises(predict.ModelOutputError, match=re.escape(f"broken.tflite: the model output {fault}")):
        model.predict_box(predict.load_image(image_path), face.box_xywh)
    box = ",".join(str(v) for v in face.box_xywh)
    args = [str(image_path), "--box", box, "--model", str(model_path), "--out", str(tmp_path / "out")]
    assert predict.main(args) == predict.EXIT_BAD_INPUT
    assert f"broken.tflite: the model output {fault}" in capsys.readouterr().err


def test_a_format_whose_size_cannot_be_read_first_is_refused(tmp_path):
    """OpenCV decodes Radiance .hdr, which Pillow cannot size: refused before decoding."""
    hdr = tmp_path / "wide.hdr"
    assert cv2.imwrite(str(hdr), np.ones((40, 60, 3), np.float32))
    assert cv2.imread(str(hdr)) is not None  # OpenCV itself would decode it
    with pytest.raises(predict.InputError, match="wide.hdr: not an image whose size can be read"):
        predict.load_image(hdr)


@pytest.mark.parametrize("program", ["predict", "app"])
def test_opencv_decoders_are_capped_too(pi_python, program):
    """The second wall: predict.py (which app.py imports first) sets OPENCV_IO_MAX_IMAGE_PIXELS
    before loading OpenCV, so an image that reached cv2 past the header check would still not
    be decoded in full."""
    probe = f"import {program}\n" + """
import cv2, numpy as np
header = b"#?RADIANCE\\nFORMAT=32-bit_rle_rgbe\\n\\n-Y 10000 +X 9000\\n" + bytes(400)
try:
    cv2.imdecode(np.frombuffer(header, np.uint8), cv2.IMREAD_COLOR)
except cv2.error as err:
    print("refused:", "CV_IO_MAX_IMAGE_PIXELS" in str(err))
"""
    result = subprocess.run([pi_python, "-c", probe], cwd=REPO_DIR, capture_output=True, text=True,
                            timeout=120, env={"PATH": "/usr/bin:/bin"})
    assert result.stdout.strip() == "refused: True", result.stdout + result.stderr


def test_with_mesh_averages_the_model_and_the_mapped_mesh(lfpw_face, tmp_path, capsys):
    import face_mesh

    image_path, face = lfpw_face
    box = ",".join(str(v) for v in face.box_xywh)
    assert predict.main([str(image_path), "--box", box, "--out", str(tmp_path / "a"), "--json"]) == 0
    plain = np.array(json.loads(capsys.readouterr().out)["faces"][0]["landmarks"])
    assert predict.main([str(image_path), "--box", box, "--out", str(tmp_path / "b"), "--json", "--with-mesh"]) == 0
    meshed = np.array(json.loads(capsys.readouterr().out)["faces"][0]["landmarks"])
    image = predict.load_image(image_path)
    mapped = face_mesh.MeshLandmarks().predict(image, predict.check_box(predict.parse_box(box), image.shape, "x"))
    np.testing.assert_allclose(meshed, (plain + mapped) / 2, atol=0.02)  # JSON rounds to 0.01 px
    assert nme_of(meshed, face) < nme_of(plain, face) + 0.005


def test_with_mesh_and_a_missing_mesh_file_is_refused_clearly(lfpw_face, tmp_path, monkeypatch, capsys):
    import face_mesh

    monkeypatch.setattr(face_mesh, "DEFAULT_MESH_MAP", tmp_path / "gone.npz")
    assert predict.main([str(lfpw_face[0]), "--out", str(tmp_path / "out"), "--with-mesh"]) == 2
    assert "gone.npz: mesh-to-68 map not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------
# Hostile inputs: links, special files, model files that change, bad flags
# ---------------------------------------------------------------------------------------

def test_a_symlinked_out_folder_is_seen_through_and_never_overwrites_an_input(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    link = tmp_path / "outlink"
    link.symlink_to(photos)
    files = [photos / "x.jpg", photos / "x_landmarks.png"]  # the second is x.jpg's natural output
    stems = predict.output_stems(files, link)
    written = {Path(f"{stem}{suffix}").resolve() for stem in stems for suffix in (".png", ".json")}
    assert not written & {f.resolve() for f in files}
    assert [s.name for s in stems] == ["x_landmarks-2", "x_landmarks_landmarks"]


def test_pipes_devices_and_huge_files_are_refused_before_reading(pi_python, lfpw_face, tmp_path):
    image_path, _ = lfpw_face
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    huge = tmp_path / "huge.jpg"
    with huge.open("wb") as file:  # sparse: no disk used, 220 MB to read
        file.truncate(220 * 2**20)
    result = run_predict(pi_python, fifo, "/dev/zero", huge, image_path, "--out", tmp_path / "out",
                         timeout=120)
    assert result.returncode == predict.EXIT_BAD_INPUT, result.stderr
    assert "pipe.jpg: not a regular file" in result.stderr
    assert "/dev/zero: not a regular file" in result.stderr
    assert f"huge.jpg: file too large (220 MB; the limit is {predict.MAX_FILE_MB} MB)" in result.stderr
    assert "Traceback" not in result.stderr and "MemoryError" not in result.stderr
    assert (tmp_path / "out" / f"{image_path.stem}_landmarks.json").exists()  # the photo was done


def test_a_photo_too_thin_for_a_face_is_no_face_and_the_next_photo_is_done(pi_python, lfpw_face, tmp_path):
    image_path, _ = lfpw_face
    wide = tmp_path / "wide.png"
    assert cv2.imwrite(str(wide), np.full((2, 100_000, 3), 128, np.uint8))
    result = run_predict(pi_python, wide, image_path, "--detector", "haar", "--out", tmp_path / "out")
    assert result.returncode == predict.EXIT_NO_FACE, result.stderr
    assert "wide.png: no face found" in result.stderr and "Traceback" not in result.stderr
    assert json.loads((tmp_path / "out" / f"{image_path.stem}_landmarks.json").read_text())["faces"]


@pytest.mark.parametrize("flag, value, message", [
    ("--threads", "100000", "--threads: wants a whole number from 1 to 64, got '100000'"),
    ("--threads", "2147483648", "--threads: wants a whole number from 1 to 64"),
    ("--focal-px", "0", "--focal-px: wants a focal length in pixels above 0, got '0'"),
    ("--focal-px", "-500", "--focal-px: wants a focal length in pixels above 0"),
    ("--focal-px", "nan", "--focal-px: wants a focal length in pixels above 0"),
    ("--focal-px", "inf", "--focal-px: wants a focal length in pixels above 0"),
])
def test_out_of_range_threads_and_focal_lengths_are_refused_as_flags(lfpw_face, tmp_path, capsys,
                                                                    flag, value, message):
    image_path, _ = lfpw_face
    with pytest.raises(SystemExit) as stop:
        predict.main([str(image_path), f"{flag}={value}", "--out", str(tmp_path)])
    assert stop.value.code == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def copy_model(tmp_path, name="copy"):
    path = tmp_path / f"{name}.tflite"
    path.write_bytes(INT8_MODEL.read_bytes())
    path.with_suffix(".json").write_text(INT8_MODEL.with_suffix(".json").read_text())
    return path


@pytest.mark.parametrize("key, value", [("crop_margin", float("nan")), ("crop_margin", -0.5),
                                        ("crop_margin", 1e6), ("crop_shift_y", 1e308),
                                        ("image_dim", 0), ("image_dim", 100)])
def test_framing_values_out_of_range_are_refused_when_the_model_loads(tmp_path, key, value):
    path = copy_model(tmp_path)
    metadata = json.loads(path.with_suffix(".json").read_text())
    metadata["framing"][key] = value
    path.with_suffix(".json").write_text(json.dumps(metadata))
    with pytest.raises(predict.InputError, match=re.escape(f"copy.json: unusable framing: {key} ")):
        predict.LandmarkModel(path)


def test_a_model_deleted_or_replaced_after_loading_is_the_model_that_was_loaded(lfpw_face, tmp_path):
    image_path, face = lfpw_face
    path = copy_model(tmp_path)
    model = predict.LandmarkModel(path)
    image = predict.load_image(image_path)
    before = model.predict_box(image, face.box_xywh)
    path.write_bytes(b"\x00" * 64)  # replaced by junk, then deleted
    path.unlink()
    answers = []
    worker = threading.Thread(target=lambda: answers.append(model.predict_box(image, face.box_xywh)))
    worker.start()  # a new thread builds its own interpreter: from the model loaded, not the path
    worker.join()
    assert len(answers) == 1 and np.array_equal(answers[0], before)


def test_a_folder_given_as_the_model_is_called_a_folder(tmp_path):
    with pytest.raises(predict.InputError, match=re.escape(f"{tmp_path}: is a folder, not a model file")):
        predict.LandmarkModel(tmp_path)


class FixedDetector:
    """A detector that finds the boxes it is given (to put a detection where no face is)."""

    name = "fixed"

    def __init__(self, boxes):
        self.boxes = boxes

    def detect(self, image):
        return [predict.Detection(box_xywh=box, score=1.0, keypoints_px=None, training_box_xywh=box,
                                  roll_deg=0.0) for box in self.boxes]


def test_a_detection_the_model_scores_below_half_is_not_reported_as_a_face(lfpw_face, tmp_path):
    image_path, face = lfpw_face
    model = predict.LandmarkModel(INT8_MODEL)
    image = predict.load_image(image_path)
    blank = tmp_path / "blank_beside_face.png"
    canvas = np.full((image.shape[0], image.shape[1] * 2, 3), 128, np.uint8)
    canvas[:, :image.shape[1]] = image  # the face on the left, a grey wall on the right
    cv2.imwrite(str(blank), canvas)
    x, y, w, h = face.box_xywh
    wall_box = (image.shape[1] + 20.0, y, w, h)
    scores = [p.score for p in model.predict(canvas, [face.box_xywh, wall_box])]
    assert scores[0] >= predict.FACE_SCORE_THRESHOLD > scores[1]
    record, _ = predict.annotate_image(blank, model, FixedDetector([face.box_xywh, wall_box]))
    assert [f["box"] for f in record["faces"]] == [[round(float(v), 2) for v in face.box_xywh]]
