"""Shared fixtures: where the real faces are, and how to find a drawn dot in an image.

The real data (``300w_subset/``, ``dlib_faces/``) is read in place from ``$LANDMARKS_DATA``
(default: ``shared/data`` beside the repository). Its images must never be copied into the
repository, so tests that need one only read it. Without the data a test is skipped on a
developer's machine, counted loudly at the end of the run, and fails in CI (``CI=true``),
where a skipped suite would look green.
"""

from __future__ import annotations

import os
import subprocess

# Before anything imports TensorFlow.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

DATA_ENV = "LANDMARKS_DATA"
PI_ENV = "LANDMARKS_PI_PYTHON"  # python of a venv made from requirements-pi.txt
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
REPO_DIR = Path(__file__).resolve().parents[1]

TRAIN_XML = "labels_ibug_300W_train.xml"
TEST_XML = "labels_ibug_300W_test.xml"


def data_root() -> Path:
    return Path(os.environ.get(DATA_ENV) or DEFAULT_DATA_DIR)


MISSING_DATA = "test data missing"  # marks the skips counted in pytest_terminal_summary


def require_data(path: Path, what: str) -> Path:
    """``path`` if it exists; otherwise skip (developer machine) or fail (CI)."""
    if path.exists():
        return path
    message = (f"{MISSING_DATA}: {what} not found at {path}: set {DATA_ENV} to the folder "
               "holding 300w_subset/ and dlib_faces/ (see shared/data/README.md)")
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Without the test data, say loudly how much was not tested and how to fix it."""
    skipped = [report for report in terminalreporter.stats.get("skipped", [])
               if MISSING_DATA in str(report.longrepr)]
    if not skipped:
        return
    write = terminalreporter.write_line
    terminalreporter.section("TEST DATA MISSING", sep="!", red=True, bold=True)
    count = f"{len(skipped)} tests were" if len(skipped) != 1 else "1 test was"
    write(f"{count} SKIPPED because the 300-W test data is not at {data_root()}.", red=True, bold=True)
    write(f"Only the tests that need no data ran. Point {DATA_ENV} at the folder holding "
          "300w_subset/ and dlib_faces/ and run again:", red=True, bold=True)
    write(f"    {DATA_ENV}=/path/to/data bash .ci/run", bold=True)
    write("(In CI, CI=true, missing data fails the run instead.)")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return require_data(data_root(), "the landmark test data")


@pytest.fixture(scope="session")
def subset_dir(data_dir) -> Path:
    """The real 300-W faces: dlib XML + .pts, standard train / test split."""
    folder = data_dir / "300w_subset"
    require_data(folder / TRAIN_XML, "300w_subset")
    return folder


@pytest.fixture(scope="session")
def dlib_faces_dir(data_dir) -> Path:
    folder = data_dir / "dlib_faces"
    require_data(folder / "training_with_face_landmarks.xml", "dlib_faces")
    return folder


@pytest.fixture(scope="session")
def train_faces(subset_dir):
    import dataset

    return dataset.parse_dlib_xml(subset_dir / TRAIN_XML, subset="train")


@pytest.fixture(scope="session")
def real_face(train_faces):
    """(grey photo, Face) of one real, roughly frontal training face."""
    import dataset

    face = train_faces[0]  # afw/1051618982_1.jpg: frontal, with context on every side
    return dataset.read_image(face.image_path), face


@pytest.fixture(scope="session")
def pi_python() -> str:
    """The interpreter of a virtual environment made from requirements-pi.txt alone."""
    python = os.environ.get(PI_ENV)
    if not python:
        message = (f"set {PI_ENV} to the python of a venv made with "
                   "'pip install -r requirements-pi.txt' (.ci/run makes one)")
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    probe = subprocess.run([python, "-c", "import tensorflow"], capture_output=True, text=True)
    assert probe.returncode != 0, f"{python} has TensorFlow installed; the Pi environment must not"
    return python


@pytest.fixture(scope="session")
def lfpw_face(subset_dir):
    """(image path, Face) of an LFPW test face with its annotation."""
    import dataset

    faces = dataset.parse_dlib_xml(subset_dir / "labels_ibug_300W_test.xml")
    return Path(faces[0].image_path), faces[0]


# ---------------------------------------------------------------------------------------
# Dots: bright Gaussian blobs drawn at known points, found again after a transformation.
# ---------------------------------------------------------------------------------------

def draw_dots(image: np.ndarray, points_px, sigma: float, amplitude: float) -> np.ndarray:
    """``image`` (grey uint8) plus a Gaussian blob centred exactly on each sub-pixel point.

    A blob is symmetric about its centre, so its intensity centroid stays on the point
    through any affine resampling: that is what the geometry tests measure.
    """
    canvas = image.astype(np.float64)
    height, width = canvas.shape[:2]
    reach = int(np.ceil(4 * sigma))
    for x, y in np.asarray(points_px, dtype=np.float64):
        x0, x1 = max(0, int(x) - reach), min(width, int(x) + reach + 2)
        y0, y1 = max(0, int(y) - reach), min(height, int(y) + reach + 2)
        if x0 >= x1 or y0 >= y1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        blob = amplitude * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2))
        canvas[y0:y1, x0:x1] += blob if canvas.ndim == 2 else blob[:, :, None]
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


def centroid(weights: np.ndarray):
    """Intensity-weighted centre (x, y) of a non-negative 2-D array, in its pixels."""
    weights = np.asarray(weights, dtype=np.float64)
    total = weights.sum()
    assert total > 0, "no dot found"
    yy, xx = np.indices(weights.shape)
    return np.array([(xx * weights).sum() / total, (yy * weights).sum() / total])


def dot_centroid_near(image: np.ndarray, point_xy, radius: int = 4):
    """Centroid of the bright dot in a (2 radius + 1)^2 window around ``point_xy``.

    The window's darkest value is taken as background, so a constant brightness offset
    does not pull the centroid towards the window centre.
    """
    image = np.asarray(image, dtype=np.float64).squeeze()
    cx, cy = (int(round(v)) for v in point_xy)
    window = image[cy - radius:cy + radius + 1, cx - radius:cx + radius + 1]
    assert window.shape == (2 * radius + 1, 2 * radius + 1), f"window around {point_xy} leaves the image"
    weights = np.clip(window - window.min(), 0, None)
    return centroid(weights) + [cx - radius, cy - radius]


def dot_centroid_of_difference(with_dot: np.ndarray, without_dot: np.ndarray,
                               threshold: float = 0.25):
    """Centroid of the one dot that distinguishes two otherwise identical renders."""
    difference = (np.asarray(with_dot, np.float64) - np.asarray(without_dot, np.float64)).squeeze()
    difference[difference < threshold * difference.max()] = 0.0
    return centroid(difference)


def inside(points_px, dim: int, border: float):
    """Mask of the points at least ``border`` pixels inside a dim x dim image."""
    points = np.asarray(points_px)
    return np.all((points >= border) & (points <= dim - 1 - border), axis=1)


def grid_landmarks(box_xywh, rows: int = 8, cols: int = 9) -> np.ndarray:
    """68 well-separated points on a grid filling a face box (68 of rows * cols cells)."""
    x, y, w, h = box_xywh
    xs = np.linspace(x + 0.1 * w, x + 0.9 * w, cols)
    ys = np.linspace(y + 0.1 * h, y + 0.9 * h, rows)
    grid = np.array([(gx, gy) for gy in ys for gx in xs])
    # Irrational-ish sub-pixel offsets, so no point sits on a pixel centre by luck.
    offsets = np.stack([np.sin(np.arange(len(grid)) * 1.7), np.cos(np.arange(len(grid)) * 2.3)], 1)
    return (grid + 0.37 * offsets)[:68]


def read_video(path) -> list:
    """Every frame of a video file, as OpenCV decodes it ([] for a file it cannot open)."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames
