"""predict.py and app.py as a Raspberry Pi runs them: Debian bookworm's arm64 Python 3.11 and
the aarch64 wheels of requirements-pi.txt under user-mode QEMU, on emulated Pi 4
(Cortex-A72) and Pi 5 (Cortex-A76) cores, give this machine's landmarks (and confidences).

Needs qemu-user-static (.ci/run installs it); the sysroot and wheels are fetched once into
pi_emulation's cache. Without QEMU the test is skipped on a developer's machine and fails in
CI. Emulation says nothing about speed: nothing here is timed.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import subprocess
import time
import urllib.request

import numpy as np
import pytest

import dataset
from tools import pi_emulation
from conftest import REPO_DIR
from face_detector import DEFAULT_DETECTOR

ASTRONAUT = REPO_DIR / "imgs" / "test_image.jpeg"
MODELS = {kind: REPO_DIR / "models" / f"landmarks_{kind}.tflite" for kind in ("int8", "float32")}
PI_CORES = [pi_emulation.PI4.qemu_cpu, pi_emulation.PI5.qemu_cpu]
TOLERANCE_PX = 0.5
# The int8 model's points through the whole of predict.py: OpenCV's area-averaging pre-shrink
# rounds a few pixels one grey level apart on aarch64 and x86 (see the crops test below),
# and the int8 model answers such a change by moving a point up to a pixel or two, on any
# machine (docs/raspberry_pi.md). The parts are compared exactly in the tests that follow.
# image_0004's crop differs in 7 pixels, which moves its 68 int8 points 0.20 px on average
# and their confidences by up to 0.047.
INT8_TOLERANCE_PX, INT8_MEAN_TOLERANCE_PX, INT8_TOLERANCE_CONFIDENCE = 1.0, 0.3, 0.1
# assert_same_faces' bounds for the whole of predict.py, by model kind.
WHOLE_PIPELINE_TOLERANCES = {
    "int8": {"tolerance_px": INT8_TOLERANCE_PX, "mean_tolerance_px": INT8_MEAN_TOLERANCE_PX,
             "tolerance_confidence": INT8_TOLERANCE_CONFIDENCE},
    "float32": {},
}
TOLERANCE_CONFIDENCE = 0.01  # face score and per-point confidence, in [0, 1]
LFPW_PHOTOS = 4

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pi() -> pi_emulation.PiEnvironment:
    """The emulated Pi (bookworm, Python 3.11), made or taken from the cache."""
    if shutil.which(pi_emulation.QEMU) is None:
        message = f"{pi_emulation.QEMU} not found: apt-get install qemu-user-static (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return pi_emulation.prepare("bookworm", log=lambda message: None)


@pytest.fixture(scope="module")
def photos(subset_dir) -> list[str]:
    """The bundled photo and the first few LFPW test photos."""
    faces = dataset.parse_dlib_xml(subset_dir / "labels_ibug_300W_test.xml")
    lfpw = list(dict.fromkeys(str(face.image_path) for face in faces))[:LFPW_PHOTOS]
    return [str(ASTRONAUT), *lfpw]


@pytest.fixture(scope="module")
def x86_records(pi_python, photos, tmp_path_factory):
    """predict.py --json on this machine (x86-64, the TensorFlow-free venv), by (detector,
    model kind), each run once."""
    cache = {}

    def records(detector: str, kind: str) -> list[dict]:
        if (detector, kind) not in cache:
            cache[detector, kind] = pi_emulation.predict_json(
                [pi_python], photos, str(MODELS[kind]), tmp_path_factory.mktemp("x86"),
                options=("--detector", detector))
        return cache[detector, kind]
    return records


def assert_same_faces(emulated: list[dict], reference: list[dict], where: str,
                      tolerance_px: float = TOLERANCE_PX, mean_tolerance_px: float | None = None,
                      tolerance_confidence: float = TOLERANCE_CONFIDENCE) -> None:
    assert [r["image"] for r in emulated] == [r["image"] for r in reference], where
    for emu, ref in zip(emulated, reference):
        assert len(emu["faces"]) == len(ref["faces"]), f"{where}: {ref['image']}"
        for emu_face, ref_face in zip(emu["faces"], ref["faces"]):
            np.testing.assert_allclose(emu_face["box"], ref_face["box"], rtol=0, atol=TOLERANCE_PX,
                                       err_msg=f"{where}: {ref['image']}")
            np.testing.assert_allclose(emu_face["landmarks"], ref_face["landmarks"], rtol=0,
                                       atol=tolerance_px, err_msg=f"{where}: {ref['image']}")
            if mean_tolerance_px is not None:
                moved = np.linalg.norm(np.subtract(emu_face["landmarks"], ref_face["landmarks"]), axis=-1)
                assert moved.mean() <= mean_tolerance_px, f"{where}: {ref['image']}: {moved.mean():.3f} px"
            for key in ("score", "landmark_confidence"):  # null for a model without confidences
                if ref_face[key] is None:
                    assert emu_face[key] is None, f"{where}: {ref['image']} {key}"
                else:
                    np.testing.assert_allclose(emu_face[key], ref_face[key], rtol=0,
                                               atol=tolerance_confidence,
                                               err_msg=f"{where}: {ref['image']} {key}")


def test_the_emulated_python_is_a_pi(pi):
    probe = ("import json, platform, sys; from importlib.metadata import version; "
             "model = [l for l in open('/proc/cpuinfo') if l.startswith('Model')]; "
             "print(json.dumps([platform.machine(), sys.version_info[:2], version('ai-edge-litert'), "
             "model[0].split(':', 1)[1].strip()]))")
    result = pi.run(pi_emulation.PI4.qemu_cpu, ["-c", probe], capture_output=True, text=True,
                    timeout=300)
    assert result.returncode == 0, result.stderr
    machine, python, litert, board = json.loads(result.stdout)
    assert machine == "aarch64" and python == [3, 11]
    assert litert.startswith("2.3.")
    assert board == "Raspberry Pi 4 Model B Rev 1.4"


@pytest.mark.parametrize("kind", sorted(MODELS))
@pytest.mark.parametrize("qemu_cpu", PI_CORES)
def test_predict_on_an_emulated_pi_gives_the_x86_landmarks(pi, photos, x86_records, kind, qemu_cpu,
                                                           tmp_path):
    """The whole of predict.py, point for point. The Haar detector's boxes are the same on any
    machine, so both sides frame the faces alike: float32 points agree within 0.5 px; int8
    points within a pixel, 0.3 px on average, confidences within 0.1 (INT8_TOLERANCE_PX: the pre-shrink's rounding
    of a few pixels; the two tests after the next check the crops and the model apart)."""
    reference = x86_records("haar", kind)
    assert sum(len(r["faces"]) for r in reference) >= len(photos)  # something to compare
    emulated = pi_emulation.predict_json(pi.command(qemu_cpu, []), photos, str(MODELS[kind]),
                                         tmp_path, env=pi.env(), options=("--detector", "haar"))
    assert_same_faces(emulated, reference, f"{kind}, haar, on {qemu_cpu}", **WHOLE_PIPELINE_TOLERANCES[kind])


@pytest.mark.parametrize("qemu_cpu", PI_CORES)
def test_the_default_detector_on_an_emulated_pi_finds_the_x86_faces(pi, photos, x86_records,
                                                                    qemu_cpu, tmp_path):
    """BlazeFace (predict.py's default) is a float model: its boxes differ from x86's by about
    1e-5 px, float kernels round differently on ARM. The float32 landmark model follows such
    a change smoothly, so its points are compared; the int8 model's points can move by a
    pixel or two for any change of the box that small, on x86 alone (docs/raspberry_pi.md),
    so int8 is compared point for point in the test above, on identical boxes."""
    reference = x86_records(DEFAULT_DETECTOR, "float32")
    assert sum(len(r["faces"]) for r in reference) >= len(photos)
    emulated = pi_emulation.predict_json(pi.command(qemu_cpu, []), photos, str(MODELS["float32"]),
                                         tmp_path, env=pi.env())
    assert_same_faces(emulated, reference, f"float32, {DEFAULT_DETECTOR}, on {qemu_cpu}")


# Run on both machines: frame the Haar faces of the photos, and run the int8 model on the
# crops given in an .npz (x86's), so that the model is compared on identical input.
FRAME_AND_RUN = """
import sys, numpy as np, dataset, geometry, predict
from face_detector import make_detector
photos, given, out = sys.argv[1].split(","), sys.argv[2], sys.argv[3]
model = predict.LandmarkModel("models/landmarks_int8.tflite")
haar = make_detector("haar")
crops = [geometry.frame_face_upright(image, d.training_box_xywh, model.image_dim, model.crop_margin,
                                     model.crop_shift_y, d.roll_deg, grey_from_bgr=True)[0]
         for image in map(dataset.read_image_bgr, photos) for d in haar.detect(image)]
inputs = np.load(given)["crops"] if given != "-" else np.stack(crops)
points = np.stack([model.run_with_confidence(geometry.gray_to_input(c))[0] for c in inputs])
np.savez(out, crops=np.stack(crops), points=points)
"""


@pytest.fixture(scope="module")
def x86_parts(pi_python, photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("parts") / "x86.npz"
    subprocess.run([pi_python, "-c", FRAME_AND_RUN, ",".join(photos), "-", str(out)], cwd=REPO_DIR,
                   check=True, capture_output=True, timeout=300)
    return out


@pytest.fixture(scope="module", params=PI_CORES)
def arm_parts(request, pi, photos, x86_parts, tmp_path_factory):
    """FRAME_AND_RUN on an emulated Pi core (the model run on x86's crops), run once per core
    for the two tests below."""
    out = tmp_path_factory.mktemp(f"parts-{request.param}") / "arm.npz"
    result = pi.run(request.param, ["-c", FRAME_AND_RUN, ",".join(photos), str(x86_parts), str(out)],
                    capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    return out


def test_the_emulated_pi_frames_the_haar_faces_as_x86_up_to_rounding(photos, x86_parts, arm_parts):
    """The crops the emulated Pi feeds the model are x86's, except that OpenCV's area
    averaging (INTER_AREA, float arithmetic with other vector instructions) rounds a few
    pixels one grey level the other way: at most 1 level, in at most 0.1 % of the pixels."""
    x86, arm = np.load(x86_parts)["crops"].astype(int), np.load(arm_parts)["crops"].astype(int)
    assert x86.shape == arm.shape and len(x86) >= len(photos)
    difference = np.abs(x86 - arm)
    assert difference.max() <= 1
    assert np.count_nonzero(difference) <= 0.001 * difference.size


def test_the_int8_model_on_an_emulated_pi_gives_x86s_points_for_the_same_crops(x86_parts, arm_parts):
    """The model and its runtime alone (LiteRT's XNNPACK int8 kernels, NEON against AVX):
    on x86's own crops the emulated Pi's points are x86's to within 0.001 px."""
    np.testing.assert_allclose(np.load(arm_parts)["points"], np.load(x86_parts)["points"], rtol=0, atol=1e-3)


def start_app_server(pi, qemu_cpu: str, log_path) -> tuple[subprocess.Popen, str]:
    """app.py on port 0 under emulation: (the process, its http://127.0.0.1:PORT address)."""
    log = open(log_path, "w")
    server = subprocess.Popen(pi.command(qemu_cpu, ["app.py", "--host", "127.0.0.1", "--port", "0",
                                                    "--detector", "haar"]),
                              cwd=REPO_DIR, env=pi.env(), stdout=subprocess.PIPE, stderr=log, text=True)
    selector = selectors.DefaultSelector()
    selector.register(server.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and server.poll() is None:
        if selector.select(timeout=1):
            line = server.stdout.readline()
            if "serving on " in line:
                return server, line.split("serving on ", 1)[1].strip().rstrip("/")
    server.kill()
    server.wait()
    raise AssertionError(f"app.py did not start under emulation: {log_path.read_text()[-2000:]}")


def test_the_web_api_answers_on_an_emulated_pi(pi, photos, x86_records, tmp_path):
    """app.py with the default int8 model; Haar boxes, so the points compare exactly."""
    server, address = start_app_server(pi, pi_emulation.PI5.qemu_cpu, tmp_path / "app.log")
    try:
        with urllib.request.urlopen(f"{address}/healthz", timeout=120) as response:
            health = json.loads(response.read())
        assert (health["status"], health["model"], health["detector"]) == ("ok", MODELS["int8"].name, "haar")
        for photo, reference in list(zip(photos, x86_records("haar", "int8")))[:2]:
            request = urllib.request.Request(f"{address}/api/landmarks", method="POST",
                                             data=open(photo, "rb").read())
            with urllib.request.urlopen(request, timeout=300) as response:
                assert response.status == 200
                record = json.loads(response.read())
            assert record["image"] == "upload"
            assert (record["width"], record["height"]) == (reference["width"], reference["height"])
            assert_same_faces([{**record, "image": photo}], [reference], "app.py on cortex-a76")
    finally:
        server.terminate()
        server.wait(timeout=60)


# ---------------------------------------------------------------------------------------
# The script's own logic, on hand-built records
# ---------------------------------------------------------------------------------------

def record(name: str, *faces) -> dict:
    return {"image": name, "faces": [{"box": box, "landmarks": points} for box, points in faces]}


def test_largest_difference_over_boxes_and_points():
    reference = [record("a.jpg", ([10, 20, 30, 30], [[1.0, 2.0], [3.0, 4.0]])),
                 record("b.jpg")]
    emulated = [record("a.jpg", ([10, 20.25, 30, 30], [[1.0, 2.0], [3.0, 4.75]])),
                record("b.jpg")]
    assert pi_emulation.largest_difference(reference, emulated) == (0.25, 0.75)
    assert pi_emulation.largest_difference(reference, reference) == (0.0, 0.0)


def test_faces_or_images_that_do_not_pair_up_are_infinitely_different():
    one_face = [record("a.jpg", ([0, 0, 5, 5], [[1.0, 1.0]]))]
    assert pi_emulation.largest_difference(one_face, [record("a.jpg")]) == (np.inf, np.inf)
    assert pi_emulation.largest_difference(one_face, [record("b.jpg", ([0, 0, 5, 5], [[1.0, 1.0]]))]) \
        == (np.inf, np.inf)


def test_the_fake_cpuinfo_describes_four_pi_cores():
    text = pi_emulation.cpuinfo_text(pi_emulation.PI5)
    entries = [block for block in text.split("\n\n") if block.startswith("processor")]
    assert [block.splitlines()[0] for block in entries] == [f"processor\t: {n}" for n in range(4)]
    assert all("CPU part\t: 0xd0b" in block and "CPU implementer\t: 0x41" in block for block in entries)
    assert text.endswith("Model\t\t: Raspberry Pi 5 Model B Rev 1.0\n")


def test_sme_on_old_qemu_is_flagged():
    assert "SME" in pi_emulation.sme_warning("max", (7, 2))
    assert pi_emulation.sme_warning("max,sme=off", (7, 2)) is None
    assert pi_emulation.sme_warning("max", (10, 0)) is None
    assert pi_emulation.sme_warning("cortex-a76", (7, 2)) is None
