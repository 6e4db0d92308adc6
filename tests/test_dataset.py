"""dataset.py: parsing the real 300-W files, the standard split, and every kind of bad input.

The real faces are read in place from $LANDMARKS_DATA. Bad inputs are built in tmp_path
from synthetic images (never copies of the real photos).
"""

import logging
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

import dataset
import geometry
from augmentation import FaceLandmarksAugmentation
from config import Config
from conftest import TEST_XML, grid_landmarks
from dataset import DataError

# ---------------------------------------------------------------------------------------
# The real 300-W subset
# ---------------------------------------------------------------------------------------


def test_xml_files_hold_the_documented_face_counts(subset_dir, train_faces):
    test_faces = dataset.parse_dlib_xml(subset_dir / TEST_XML)
    assert len(train_faces) == 2012
    assert len(test_faces) == 224
    prefixes = [Path(f.image_path).relative_to(subset_dir).parts[0] for f in train_faces]
    assert {p: prefixes.count(p) for p in set(prefixes)} == {"afw": 337, "helen": 870, "lfpw": 805}
    for face in train_faces + test_faces:
        assert face.landmarks_px.shape == (68, 2) and face.landmarks_px.dtype == np.float32
        assert Path(face.image_path).is_absolute() and Path(face.image_path).exists()
        assert face.box_xywh[2] > 0 and face.box_xywh[3] > 0


def test_pts_files_agree_with_the_xml_parts_up_to_rounding(subset_dir, train_faces):
    """.pts are 1-based with decimals, the XML 0-based whole pixels: after parse_pts'
    conversion the two differ by the XML's rounding alone (at most half a pixel)."""
    faces = train_faces + dataset.parse_dlib_xml(subset_dir / TEST_XML)
    differences = np.stack([
        np.abs(dataset.parse_pts(Path(f.image_path).with_suffix(".pts")) - f.landmarks_px)
        for f in faces])
    assert differences.max() <= 0.5 + 1e-3
    # Uniform rounding error averages a quarter pixel; an off-by-one convention would be ~1.
    assert 0.2 < differences.mean() < 0.3


@pytest.mark.parametrize("relative_path, subset", [
    ("afw/1051618982_1.jpg", "train"),
    ("helen/trainset/100032540_1.jpg", "train"),
    ("lfpw/trainset/image_0001.png", "train"),
    ("lfpw/trainset/image_0001_mirror.jpg", "train"),  # mirrors may augment training
    ("helen/testset/296814969_3.jpg", "common"),
    ("lfpw/testset/image_0001.png", "common"),
    ("ibug/image_003_1.jpg", "challenging"),
    ("helen/testset/296814969_3_mirror.jpg", None),
    ("lfpw/testset/image_0001_mirror.jpg", None),
    ("ibug/image_003_1_mirror.jpg", None),
    ("LFPW/TestSet/image_0002.png", "common"),
    ("lfpw\\testset\\image_0002.png", "common"),
    ("other/image.jpg", None),
])
def test_standard_subset_follows_the_300w_split_by_path(relative_path, subset):
    assert dataset.standard_subset(relative_path) == subset


def test_load_faces_standard_and_xml_agree_on_the_standard_subset(subset_dir, train_faces):
    keys = lambda faces: sorted((f.image_path, tuple(f.box_xywh)) for f in faces)  # noqa: E731
    standard_train = dataset.load_faces(subset_dir, "train", "standard")
    assert keys(standard_train) == keys(train_faces)
    assert {f.subset for f in standard_train} == {"train"}
    xml_test = dataset.load_faces(subset_dir, "test", "xml")
    assert len(xml_test) == 224 and {f.subset for f in xml_test} == {"test"}
    standard_test = dataset.load_faces(subset_dir, "test", "standard")
    assert keys(standard_test) == keys(xml_test)
    assert {f.subset for f in standard_test} == {"common"}  # LFPW test; no ibug here


def test_load_faces_rejects_unknown_split_names(subset_dir):
    with pytest.raises(ValueError, match="split must be one of"):
        dataset.load_faces(subset_dir, "validation")
    with pytest.raises(ValueError, match="split_mode"):
        dataset.load_faces(subset_dir, "train", "by-path")
    with pytest.raises(DataError, match="labels_ibug_300W_validation.xml: not found"):
        dataset.load_faces(subset_dir, "validation", "xml")


def test_scan_pts_folder_reads_a_300w_folder(subset_dir, train_faces):
    faces = dataset.scan_pts_folder(subset_dir / "afw")
    assert len(faces) == 337
    by_path = {f.image_path: f for f in train_faces}
    for face in faces:
        assert face.subset == "all" and face.source.endswith(".pts")
        xml_face = by_path[face.image_path]
        assert np.abs(face.landmarks_px - xml_face.landmarks_px).max() <= 0.5 + 1e-3
        np.testing.assert_allclose(face.box_xywh, geometry.box_from_landmarks(face.landmarks_px))


def iou(a, b):
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    overlap_w = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    overlap_h = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    overlap = overlap_w * overlap_h
    return overlap / (aw * ah + bw * bh - overlap)


def test_box_from_landmarks_imitates_the_hog_detector_box(train_faces):
    """Measured on the 2012 training faces: median IoU 0.74 with the XML (HOG) box, side
    ratio 0.995, centre offset 0.3 % of the side. The test asserts a box of the right size
    and place on the typical face, i.e. a crop framed as in training."""
    xml_boxes = np.array([f.box_xywh for f in train_faces])
    derived = np.array([geometry.box_from_landmarks(f.landmarks_px) for f in train_faces])
    ious = np.array([iou(a, b) for a, b in zip(derived, xml_boxes)])
    assert np.median(ious) > 0.7
    assert np.percentile(ious, 10) > 0.55
    side = xml_boxes[:, 2:].max(axis=1)
    assert abs(np.median(derived[:, 2] / side) - 1.0) < 0.03
    centre_offset = (derived[:, :2] + derived[:, 2:] / 2 - xml_boxes[:, :2] - xml_boxes[:, 2:] / 2)
    assert np.all(np.abs(np.median(centre_offset / side[:, None], axis=0)) < 0.02)


def test_dlib_example_faces_parse_and_load(dlib_faces_dir):
    training = dataset.parse_dlib_xml(dlib_faces_dir / "training_with_face_landmarks.xml")
    testing = dataset.parse_dlib_xml(dlib_faces_dir / "testing_with_face_landmarks.xml")
    assert (len(training), len(testing)) == (18, 25)
    assert len({f.image_path for f in training}) == 4 and len({f.image_path for f in testing}) == 5
    sides = [max(f.box_xywh[2:]) for f in training + testing]
    assert 37 <= min(sides) and max(sides) <= 109
    loaded = dataset.LandmarkDataset(training + testing, Config(), training=False)
    assert len(loaded) == 43 and loaded.report.skipped == []


def test_split_by_image_keeps_each_photo_on_one_side(train_faces):
    train, validation = dataset.split_by_image(train_faces, 0.05, seed=42)
    assert len(train) + len(validation) == len(train_faces)
    assert not {f.image_path for f in train} & {f.image_path for f in validation}
    images = len({f.image_path for f in train_faces})
    assert len({f.image_path for f in validation}) == round(images * 0.05)
    again, _ = dataset.split_by_image(train_faces, 0.05, seed=42)
    assert [f.image_path for f in again] == [f.image_path for f in train]
    other, _ = dataset.split_by_image(train_faces, 0.05, seed=7)
    assert [f.image_path for f in other] != [f.image_path for f in train]
    _, one = dataset.split_by_image(train_faces[:3], 0.01, seed=0)
    assert len(one) == 1  # a small positive fraction still validates on something


def test_cached_evaluation_crop_equals_framing_the_full_photo(subset_dir):
    """The dataset keeps a pre-shrunk region per face; cropping from it must give the same
    face, at the same points, as predict.py cropping the full photo."""
    config = Config()
    faces = dataset.parse_dlib_xml(subset_dir / TEST_XML)[:24]
    data = dataset.LandmarkDataset(faces, config, training=False)
    framing = FaceLandmarksAugmentation(config, training=False)
    for index, item in enumerate(data.items):
        image, landmarks_norm = data.sample(index)
        photo = dataset.read_image(item.face.image_path)
        reference, reference_px = framing(photo, item.face.landmarks_px,
                                          dataset.box_to_dict(item.face.box_xywh))
        landmarks_px = geometry.norm_to_px(landmarks_norm.reshape(68, 2), config.image_dim)
        assert np.abs(landmarks_px - reference_px).max() < 0.1
        assert np.abs(image - reference).mean() * 127.5 < 1.0


# ---------------------------------------------------------------------------------------
# Synthetic files
# ---------------------------------------------------------------------------------------

BOX = (100, 60, 100, 110)  # left, top, width, height


def synthetic_rgb(height=240, width=320, seed=0) -> np.ndarray:
    """A smooth colour 'photo' with some texture (RGB order)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    image = np.dstack([(xx * 0.7) % 256, (yy * 0.9) % 256, ((xx + yy) * 0.4) % 256])
    image += rng.normal(0, 8, size=image.shape)
    cv2.circle(image, (150, 115), 40, (250, 200, 120), -1)
    return np.clip(image, 0, 255).astype(np.uint8)


def write_rgb(path: Path, rgb: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), rgb[:, :, ::-1].copy())  # OpenCV writes BGR
    return path


def part_lines(landmarks, names=None):
    names = names or [f"{i:02d}" for i in range(len(landmarks))]
    return "".join(f"      <part name='{n}' x='{x:.0f}' y='{y:.0f}'/>\n"
                   for n, (x, y) in zip(names, landmarks))


def box_xml(box=BOX, landmarks=None, names=None, extra=""):
    landmarks = grid_landmarks(box) if landmarks is None else landmarks
    left, top, width, height = box
    return (f"    <box top='{top}' left='{left}' width='{width}' height='{height}'{extra}>\n"
            f"{part_lines(landmarks, names)}    </box>\n")


def write_xml(path: Path, images: dict) -> Path:
    """images: {file attribute: [box XML, ...]} -> a dlib imglab file."""
    body = "".join(f"  <image file='{name}'>\n{''.join(boxes)}  </image>\n"
                   for name, boxes in images.items())
    path.write_text(f"<?xml version='1.0'?>\n<dataset>\n<images>\n{body}</images>\n</dataset>\n")
    return path


def write_pts(path: Path, points_px_zero_based, header_count=None):
    points = np.asarray(points_px_zero_based) + 1.0
    count = len(points) if header_count is None else header_count
    rows = "".join(f"{x:.3f} {y:.3f}\n" for x, y in points)
    path.write_text(f"version: 1\nn_points:  {count}\n{{\n{rows}}}\n")
    return path


def face_at(path, box=BOX, landmarks=None) -> dataset.Face:
    landmarks = grid_landmarks(box) if landmarks is None else landmarks
    return dataset.Face(str(path), tuple(float(v) for v in box),
                        np.asarray(landmarks, np.float32), "train", "synthetic.xml")


# ---------------------------------------------------------------------------------------
# Bad XML
# ---------------------------------------------------------------------------------------

BAD_XML = {
    "malformed": ("<dataset><images><image file='a.jpg'>", "malformed XML"),
    "no images element": ("<dataset><name>x</name></dataset>", r"no <images> element"),
    "image without file": ("<dataset><images><image><box top='1' left='1' width='5' height='5'/>"
                           "</image></images></dataset>", "has no 'file' attribute"),
}


@pytest.mark.parametrize("text, fault", BAD_XML.values(), ids=BAD_XML.keys())
def test_unusable_xml_files_raise_naming_the_file(tmp_path, text, fault):
    path = tmp_path / "labels.xml"
    path.write_text(text)
    with pytest.raises(DataError, match=fault) as error:
        dataset.parse_dlib_xml(path)
    assert str(path) in str(error.value)


def test_missing_xml_file_raises_naming_it(tmp_path):
    with pytest.raises(DataError, match="cannot read") as error:
        dataset.parse_dlib_xml(tmp_path / "nowhere.xml")
    assert "nowhere.xml" in str(error.value)


NAMES = [f"{i:02d}" for i in range(68)]
BAD_BOXES = {
    "67 points": (box_xml(landmarks=grid_landmarks(BOX)[:67]), "has 67 points, expected 68"),
    "69 points": (box_xml(landmarks=np.vstack([grid_landmarks(BOX), [[1, 1]]]),
                          names=NAMES + ["68"]), "has 69 points, expected 68"),
    "name not a number": (box_xml(names=NAMES[:5] + ["xx"] + NAMES[6:]), r"bad <part> <part name=\"xx\""),
    "name 68": (box_xml(names=NAMES[:67] + ["68"]), r"bad <part> <part name=\"68\""),
    "name -1": (box_xml(names=["-1"] + NAMES[1:]), r"bad <part> <part name=\"-1\""),
    "duplicate name": (box_xml(names=NAMES[:6] + ["05"] + NAMES[7:]), "part names are not 00..67"),
    "box not numeric": (box_xml().replace("width='100'", "width='wide'"), "box needs numeric"),
    "part not numeric": (box_xml().replace("x='", "x='a", 1), "bad <part>"),
    "part x nan": (box_xml().replace("x='", "x='nan' old='", 1),
                   r"part 00 has a non-finite coordinate \(nan, "),
    "part y inf": (box_xml(names=["07"] + NAMES[1:7] + ["00"] + NAMES[8:]).replace("y='", "y='inf' old='", 1),
                   r"part 07 has a non-finite coordinate \(\S+, inf\)"),
    "width nan": (box_xml().replace("width='100'", "width='nan'"),
                  "box needs finite left, top and width, height > 0, got 100, 60, nan, 110"),
    "left -inf": (box_xml().replace("left='100'", "left='-inf'"), "box needs finite left, top"),
    "height 0": (box_xml().replace("height='110'", "height='0'"), "box needs finite left, top"),
}


@pytest.mark.parametrize("box, fault", BAD_BOXES.values(), ids=BAD_BOXES.keys())
def test_bad_boxes_raise_naming_the_file_the_image_and_the_fault(tmp_path, box, fault):
    path = write_xml(tmp_path / "labels.xml", {"helen/trainset/1.jpg": [box_xml(), box]})
    with pytest.raises(DataError, match=fault) as error:
        dataset.parse_dlib_xml(path)
    assert f"{path}: image 'helen/trainset/1.jpg' box 1" in str(error.value)


def test_ignored_boxes_are_left_out_and_points_are_read_by_name(tmp_path):
    landmarks = grid_landmarks(BOX)
    order = np.random.default_rng(0).permutation(68)
    shuffled = box_xml(landmarks=np.rint(landmarks[order]), names=[f"{i:02d}" for i in order])
    path = write_xml(tmp_path / "labels.xml", {"a.jpg": [shuffled, box_xml(extra=" ignore='1'")]})
    faces = dataset.parse_dlib_xml(path, subset="train")
    assert len(faces) == 1
    np.testing.assert_array_equal(faces[0].landmarks_px, np.rint(landmarks))
    assert faces[0].box_xywh == BOX and faces[0].subset == "train"
    assert faces[0].image_path == str((tmp_path / "a.jpg").resolve())


# ---------------------------------------------------------------------------------------
# Bad .pts
# ---------------------------------------------------------------------------------------

GOOD_ROWS = "".join(f"{x:.3f} {y:.3f}\n" for x, y in grid_landmarks(BOX) + 1)
BAD_PTS = {
    "no braces": (f"version: 1\nn_points: 68\n{GOOD_ROWS}", "points must sit between '{' and '}'"),
    "no closing brace": (f"version: 1\nn_points: 68\n{{\n{GOOD_ROWS}", "points must sit between"),
    "header mismatch": (f"version: 1\nn_points: 68\n{{\n{GOOD_ROWS.split(chr(10), 1)[1]}}}\n",
                        "header says 68 points, file has 67"),
    "67 points": ("version: 1\nn_points: 67\n{\n" + GOOD_ROWS.split("\n", 1)[1] + "}\n",
                  "has 67 points, expected 68"),
    "not numbers": (f"version: 1\nn_points: 68\n{{\nabc def\n{GOOD_ROWS.split(chr(10), 1)[1]}}}\n",
                    "every point line needs two numbers"),
    "three numbers": (f"version: 1\nn_points: 68\n{{\n1 2 3\n{GOOD_ROWS.split(chr(10), 1)[1]}}}\n",
                      "every point line needs two numbers"),
    "no header": (f"version: 1\n{{\n{GOOD_ROWS}}}\n", "no 'n_points:' header"),
    "empty": ("", "no 'n_points:' header"),
    "nan point": (f"version: 1\nn_points: 68\n{{\n{GOOD_ROWS.replace(GOOD_ROWS.split()[2], 'nan', 1)}}}\n",
                  "point 2 has a non-finite coordinate"),
}


@pytest.mark.parametrize("text, fault", BAD_PTS.values(), ids=BAD_PTS.keys())
def test_malformed_pts_files_raise_naming_the_file(tmp_path, text, fault):
    path = tmp_path / "face.pts"
    path.write_text(text)
    with pytest.raises(DataError, match=fault.replace("{", r"\{").replace("}", r"\}")) as error:
        dataset.parse_pts(path)
    assert str(error.value).startswith(f"{path}: ")


def test_parse_pts_converts_one_based_points_to_zero_based(tmp_path):
    points = grid_landmarks(BOX)
    parsed = dataset.parse_pts(write_pts(tmp_path / "face.pts", points))
    assert parsed.shape == (68, 2) and parsed.dtype == np.float32
    np.testing.assert_allclose(parsed, points, atol=1e-3)


def test_pts_folder_without_an_image_beside_a_pts_raises(tmp_path):
    write_pts(tmp_path / "lonely.pts", grid_landmarks(BOX))
    with pytest.raises(DataError, match="no image beside it") as error:
        dataset.scan_pts_folder(tmp_path)
    assert "lonely.pts" in str(error.value)


def test_load_faces_reads_a_pts_only_tree_with_the_standard_split(tmp_path):
    for relative in ("afw/1.jpg", "helen/trainset/2.png", "helen/testset/3.jpg",
                     "ibug/4.jpg", "ibug/4_mirror.jpg"):
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        write_rgb(path, synthetic_rgb())
        write_pts(path.with_suffix(".pts"), grid_landmarks(BOX))
    names = lambda faces: sorted(Path(f.image_path).relative_to(tmp_path.resolve()).as_posix()  # noqa: E731
                                 for f in faces)
    assert names(dataset.load_faces(tmp_path, "train")) == ["afw/1.jpg", "helen/trainset/2.png"]
    assert names(dataset.load_faces(tmp_path, "common")) == ["helen/testset/3.jpg"]
    assert names(dataset.load_faces(tmp_path, "challenging")) == ["ibug/4.jpg"]
    face = dataset.load_faces(tmp_path, "train")[0]
    np.testing.assert_allclose(face.box_xywh, geometry.box_from_landmarks(face.landmarks_px))


def test_load_faces_standard_regroups_dlibs_archive_split_without_duplicates(tmp_path):
    """dlib's archive lists test images in its train XML (and some in both), with mirrored
    copies: the standard split de-duplicates and keeps mirrors out of the test parts."""
    write_xml(tmp_path / "labels_ibug_300W_train.xml", {
        "afw/1.jpg": [box_xml()], "helen/trainset/2.jpg": [box_xml()],
        "helen/testset/3.jpg": [box_xml()], "helen/testset/3_mirror.jpg": [box_xml()],
        "lfpw/testset/4.png": [box_xml(), box_xml((10, 10, 50, 50))]})
    write_xml(tmp_path / "labels_ibug_300W_test.xml", {
        "lfpw/testset/4.png": [box_xml()], "ibug/5.jpg": [box_xml()],
        "ibug/5_mirror.jpg": [box_xml()]})
    names = lambda faces: sorted(Path(f.image_path).relative_to(tmp_path.resolve()).as_posix()  # noqa: E731
                                 for f in faces)
    assert names(dataset.load_faces(tmp_path, "train")) == ["afw/1.jpg", "helen/trainset/2.jpg"]
    assert names(dataset.load_faces(tmp_path, "common")) == [
        "helen/testset/3.jpg", "lfpw/testset/4.png", "lfpw/testset/4.png"]  # two faces, once each
    assert names(dataset.load_faces(tmp_path, "challenging")) == ["ibug/5.jpg"]
    assert len(dataset.load_faces(tmp_path, "test")) == 4
    assert len(dataset.load_faces(tmp_path, "test", "xml")) == 3  # dlib's split, as it is


def test_load_faces_on_a_folder_without_annotations_raises(tmp_path):
    with pytest.raises(DataError, match="no labels_ibug_300W_.*xml and no .pts files"):
        dataset.load_faces(tmp_path, "train")


# ---------------------------------------------------------------------------------------
# Bad and unusual images
# ---------------------------------------------------------------------------------------


@pytest.fixture
def good_jpg(tmp_path):
    return write_rgb(tmp_path / "good.jpg", synthetic_rgb())


def write_truncated_jpeg(path: Path) -> Path:
    ok, encoded = cv2.imencode(".jpg", synthetic_rgb(seed=1))
    path.write_bytes(encoded.tobytes()[: len(encoded) // 2])
    return path


BAD_IMAGES = {
    "missing": (lambda p: p, "cannot read image"),
    "truncated jpeg": (write_truncated_jpeg, "not a readable image"),
    "text named .jpg": (lambda p: (p.write_text("not a photo\n"), p)[1], "not a readable image"),
    "empty file": (lambda p: (p.write_bytes(b""), p)[1], "empty file"),
}


@pytest.mark.parametrize("make, fault", BAD_IMAGES.values(), ids=BAD_IMAGES.keys())
def test_unreadable_image_is_skipped_with_a_warning_naming_it(tmp_path, good_jpg, make, fault, caplog):
    bad = make(tmp_path / "bad.jpg")
    faces = [face_at(good_jpg), face_at(bad), face_at(bad, box=(20, 20, 60, 60))]
    with caplog.at_level(logging.WARNING, logger="dataset"):
        data = dataset.LandmarkDataset(faces, Config(), training=False)
    assert len(data) == 1 and data.faces[0].image_path == str(good_jpg)
    assert len(data.report.skipped) == 1  # one message for the image, naming its 2 faces
    assert str(bad) in data.report.skipped[0] and fault in data.report.skipped[0]
    assert "(2 faces)" in data.report.skipped[0]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(bad) in w and fault in w for w in warnings)
    assert data.report.summary(3) == "1 of 3 faces skipped"


@pytest.mark.parametrize("make, fault", BAD_IMAGES.values(), ids=BAD_IMAGES.keys())
def test_unreadable_image_raises_with_strict_data(tmp_path, good_jpg, make, fault):
    bad = make(tmp_path / "bad.jpg")
    with pytest.raises(DataError, match=fault) as error:
        dataset.LandmarkDataset([face_at(good_jpg), face_at(bad)], Config(strict_data=True),
                                training=False)
    assert str(bad) in str(error.value)


BAD_FACES = {
    "points far outside": (dict(landmarks=grid_landmarks(BOX) + [0, 600]), "points outside the 320x240 image"),
    "box outside": (dict(box=(500, 300, 80, 80)), "lies outside the 320x240 image"),
}


@pytest.mark.parametrize("where, fault", BAD_FACES.values(), ids=BAD_FACES.keys())
def test_face_outside_its_image_is_skipped_or_raises(good_jpg, where, fault, caplog):
    faces = [face_at(good_jpg), face_at(good_jpg, **where)]
    with caplog.at_level(logging.WARNING, logger="dataset"):
        data = dataset.LandmarkDataset(faces, Config(), training=False)
    assert len(data) == 1 and len(data.report.skipped) == 1
    assert str(good_jpg) in data.report.skipped[0] and fault in data.report.skipped[0]
    assert "[from synthetic.xml]" in data.report.skipped[0]
    with pytest.raises(DataError, match=fault):
        dataset.LandmarkDataset(faces, Config(strict_data=True), training=False)


def test_points_slightly_outside_the_image_are_accepted(tmp_path):
    """A chin cut by the frame is a real face, not an annotation error."""
    path = write_rgb(tmp_path / "cut.jpg", synthetic_rgb())
    landmarks = grid_landmarks((100, 150, 100, 100))  # lowest row reaches y = 240+
    assert landmarks[:, 1].max() > 240
    data = dataset.LandmarkDataset([face_at(path, (100, 150, 100, 100), landmarks)], Config(),
                                   training=False)
    assert len(data) == 1 and data.report.skipped == []


def test_dataset_of_only_bad_faces_raises(tmp_path):
    faces = [face_at(tmp_path / "missing.jpg"), face_at(write_truncated_jpeg(tmp_path / "t.jpg"))]
    with pytest.raises(DataError, match="none of the 2 faces could be loaded"):
        dataset.LandmarkDataset(faces, Config(), training=False)
    with pytest.raises(DataError, match="no faces"):
        dataset.LandmarkDataset([], Config(), training=False)


@pytest.fixture
def pixel_formats(tmp_path):
    """The same picture as 8-bit RGB JPEG-free PNG, grey PNG, RGBA PNG and 16-bit RGB PNG."""
    rgb = synthetic_rgb()
    bgr = rgb[:, :, ::-1]
    paths = {"rgb": tmp_path / "rgb.png", "grey": tmp_path / "grey.png",
             "rgba": tmp_path / "rgba.png", "16 bit": tmp_path / "sixteen.png"}
    assert cv2.imwrite(str(paths["rgb"]), bgr.copy())
    assert cv2.imwrite(str(paths["grey"]), cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    assert cv2.imwrite(str(paths["rgba"]), np.dstack([bgr, np.full(rgb.shape[:2], 255, np.uint8)]))
    assert cv2.imwrite(str(paths["16 bit"]), bgr.astype(np.uint16) * 257)
    assert cv2.imread(str(paths["16 bit"]), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    assert cv2.imread(str(paths["rgba"]), cv2.IMREAD_UNCHANGED).shape[2] == 4
    return paths


@pytest.mark.parametrize("kind", ["grey", "rgba", "16 bit"])
def test_grey_rgba_and_16_bit_images_give_the_same_crop_as_8_bit_rgb(pixel_formats, kind):
    config = Config()
    reference = dataset.LandmarkDataset([face_at(pixel_formats["rgb"])], config, training=False)
    other = dataset.LandmarkDataset([face_at(pixel_formats[kind])], config, training=False)
    assert other.report.skipped == []
    image, landmarks = other.sample(0)
    reference_image, reference_landmarks = reference.sample(0)
    np.testing.assert_array_equal(landmarks, reference_landmarks)
    assert np.abs(image - reference_image).max() <= 1.0 / 127.5 + 1e-6  # one grey level
    assert dataset.read_image(pixel_formats[kind]).shape == (240, 320)


def test_exif_rotated_jpeg_is_read_in_stored_pixel_order(tmp_path):
    """dlib's tools, which made the annotations, ignore EXIF orientation; so must we."""
    picture = Image.fromarray(synthetic_rgb())
    plain, rotated = tmp_path / "plain.jpg", tmp_path / "rotated.jpg"
    picture.save(plain, quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    picture.save(rotated, quality=95, exif=exif.tobytes())
    with Image.open(rotated) as check:
        assert check.getexif().get(0x0112) == 6  # the tag is really there
    image_plain, image_rotated = dataset.read_image(plain), dataset.read_image(rotated)
    assert image_rotated.shape == (240, 320)
    np.testing.assert_array_equal(image_rotated, image_plain)
    samples = [dataset.LandmarkDataset([face_at(p)], Config(), training=False).sample(0)
               for p in (plain, rotated)]
    np.testing.assert_array_equal(samples[0][0], samples[1][0])


def test_huge_photo_is_cached_as_a_small_region(tmp_path):
    """A 4000 x 3000 photo keeps only a pre-shrunk region around its face in memory."""
    big = cv2.resize(synthetic_rgb(), (4000, 3000), interpolation=cv2.INTER_LINEAR)
    path = write_rgb(tmp_path / "big.jpg", big)
    box = (1200, 700, 1500, 1500)
    data = dataset.LandmarkDataset([face_at(path, box)], Config(), training=False)
    region = data.items[0].region
    assert max(region.shape) <= math.ceil(geometry.REGION_CONTEXT * geometry.MAX_PRESCALE * 128) + 2
    image, landmarks_norm = data.sample(0)
    framing = FaceLandmarksAugmentation(Config(), training=False)
    _, reference_px = framing(dataset.read_image(path), grid_landmarks(box), dataset.box_to_dict(box))
    np.testing.assert_allclose(geometry.norm_to_px(landmarks_norm.reshape(68, 2), 128),
                               reference_px, atol=0.1)


def test_symlinked_folders_keep_their_standard_split(subset_dir, tmp_path):
    """A data dir assembled from symlinks (as kagglehub's cache can be) splits like the real one."""
    import shutil

    for part in ("afw", "helen", "lfpw"):
        (tmp_path / part).symlink_to(subset_dir / part, target_is_directory=True)
    for xml in ("labels_ibug_300W_train.xml", "labels_ibug_300W_test.xml"):
        shutil.copy(subset_dir / xml, tmp_path / xml)
    assert len(dataset.load_faces(tmp_path, "train")) == 2012
    assert len(dataset.load_faces(tmp_path, "common")) == 224
