"""augmentation.py: the returned landmarks sit exactly on the face's pixels after every
augmentation, flipped points change slots as the 68-point scheme requires, and evaluation
is the plain, deterministic crop.

Dots are drawn at the landmarks (a synthetic grid of well-separated points, and each real
landmark of a real photo on its own) and found again in the augmented image.
"""

import cv2
import numpy as np
import pytest
from PIL import Image

import geometry
from augmentation import FaceLandmarksAugmentation
from config import Config
from conftest import (dot_centroid_near, dot_centroid_of_difference, draw_dots, grid_landmarks,
                      inside)
from dataset import box_to_dict

MAX_ERROR_PX = 1.0
DIM = Config().image_dim

FORCED = {
    "rotation": {"angle_deg": 14.0},
    "rotation_negative": {"angle_deg": -14.0},
    "flip": {"flip": True},
    "scale_down": {"scale": 0.9},
    "scale_up": {"scale": 1.1},
    "shift": {"shift_xy": (0.08, -0.08)},
    "everything": {"angle_deg": -11.0, "flip": True, "scale": 1.08, "shift_xy": (-0.05, 0.06),
                   "brightness": 0.2, "contrast": 1.2, "saturation": 0.8},
}


@pytest.fixture(scope="module")
def synthetic_face():
    """A 400 x 420 image with a dot on each of 68 grid 'landmarks' filling the face box."""
    box = (100.0, 90.0, 200.0, 190.0)
    landmarks = grid_landmarks(box)
    image = draw_dots(np.zeros((400, 420), np.uint8), landmarks, sigma=2.5, amplitude=200)
    return image, landmarks, box_to_dict(box)


def expected_slots(params):
    """Where each original point ends up in the returned array."""
    return geometry.FLIP_PERMUTATION_68 if params.get("flip") else np.arange(68)


def assert_grid_dots_on_landmarks(image, landmarks_out, mean_px=0.1):
    keep = inside(landmarks_out, DIM, 5)
    assert keep.sum() >= 30
    errors = np.array([np.linalg.norm(dot_centroid_near(image, p) - p) for p in landmarks_out[keep]])
    assert errors.max() <= MAX_ERROR_PX, f"a dot is {errors.max():.3f} px off its landmark"
    assert errors.mean() <= mean_px, f"dots are {errors.mean():.3f} px off on average"


@pytest.mark.parametrize("params", FORCED.values(), ids=FORCED.keys())
def test_dots_stay_on_landmarks_under_forced_augmentation(synthetic_face, params):
    image, landmarks, box = synthetic_face
    augment = FaceLandmarksAugmentation(Config(), training=True)
    out, landmarks_out = augment(image, landmarks, box, params=params)
    assert_grid_dots_on_landmarks(out, landmarks_out)


def test_dots_stay_on_landmarks_under_random_draws(synthetic_face):
    image, landmarks, box = synthetic_face
    augment = FaceLandmarksAugmentation(Config(), training=True)
    rng = np.random.default_rng(123)
    flips = 0
    for _ in range(40):
        params = augment.sample_params(rng)
        flips += params["flip"]
        out, landmarks_out = augment(image, landmarks, box, params=params)
        assert_grid_dots_on_landmarks(out, landmarks_out)
    assert 5 < flips < 35  # both branches were exercised


def test_dots_stay_on_landmarks_of_a_colour_image(synthetic_face):
    image, landmarks, box = synthetic_face
    tint = np.array([0.6, 1.0, 0.8])
    colour = np.rint(image[:, :, None] * tint).astype(np.uint8)
    augment = FaceLandmarksAugmentation(Config(), training=True)
    out, landmarks_out = augment(colour, landmarks, box, params=FORCED["everything"])
    assert_grid_dots_on_landmarks(out, landmarks_out)


@pytest.mark.parametrize("params", [
    {},
    FORCED["flip"],
    FORCED["everything"],
    "random-1", "random-2", "random-3", "random-4",
])
def test_each_real_landmark_dot_lands_on_its_own_returned_point(real_face, params):
    """Each of the 68 landmarks of a real photo is marked alone; its dot must come out under
    the returned point of the same landmark (after a flip: its mirror partner's slot)."""
    photo, face = real_face
    augment = FaceLandmarksAugmentation(Config(), training=True)
    if isinstance(params, str):
        params = augment.sample_params(np.random.default_rng(int(params.split("-")[1])))
    # Dim the photo so a dot on it stays below white after brightness and contrast.
    background = (photo * 0.5 + 20).astype(np.uint8)
    box = box_to_dict(face.box_xywh)
    plain, landmarks_out = augment(background, face.landmarks_px, box, params=params)
    slots = expected_slots(params)
    errors = []
    for k in range(68):
        point_out = landmarks_out[slots[k]]
        if not inside(point_out[None], DIM, 4)[0]:
            continue
        marked = draw_dots(background, face.landmarks_px[k:k + 1], sigma=2.5, amplitude=100)
        out, _ = augment(marked, face.landmarks_px, box, params=params)
        errors.append(np.linalg.norm(dot_centroid_of_difference(out, plain) - point_out))
    errors = np.array(errors)
    assert len(errors) >= 60
    assert errors.max() <= MAX_ERROR_PX, f"a dot is {errors.max():.3f} px off its landmark"
    assert errors.mean() <= 0.2, f"dots are {errors.mean():.3f} px off on average"


def test_flip_mirrors_the_image_and_moves_left_eye_corner_36_to_slot_45(real_face):
    photo, face = real_face
    augment = FaceLandmarksAugmentation(Config(), training=True)
    box = box_to_dict(face.box_xywh)
    straight, points = augment(photo, face.landmarks_px, box, params={})
    flipped, points_flipped = augment(photo, face.landmarks_px, box, params={"flip": True})
    # The same pixels, mirrored (up to warpAffine's 1/32 px fixed-point rounding).
    difference = np.abs(flipped - straight[:, ::-1]) * 127.5
    assert difference.mean() < 0.5 and difference.max() <= 8
    mirror = lambda p: np.stack([DIM - 1 - p[..., 0], p[..., 1]], axis=-1)  # noqa: E731
    np.testing.assert_allclose(points_flipped[45], mirror(points[36]), atol=1e-4)
    np.testing.assert_allclose(points_flipped[36], mirror(points[45]), atol=1e-4)
    np.testing.assert_allclose(points_flipped, mirror(points)[geometry.FLIP_PERMUTATION_68], atol=1e-4)
    # Still a face in the 68-point scheme: 36 on the image's left, jaw 0 left of jaw 16.
    assert points_flipped[36, 0] < points_flipped[45, 0]
    assert points_flipped[0, 0] < points_flipped[16, 0]
    assert points_flipped[48, 0] < points_flipped[54, 0]


def test_evaluation_mode_is_deterministic_and_is_the_frame_face_crop(real_face):
    photo, face = real_face
    config = Config()
    augment = FaceLandmarksAugmentation(config, training=False)
    box = box_to_dict(face.box_xywh)
    first = augment(photo, face.landmarks_px, box, rng=np.random.default_rng(1))
    second = augment(photo, face.landmarks_px, box, rng=np.random.default_rng(2))
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    crop, matrix = geometry.frame_face(photo, face.box_xywh, config.image_dim, config.crop_margin,
                                       config.crop_shift_y)
    np.testing.assert_array_equal(first[0], geometry.gray_to_input(crop))
    np.testing.assert_allclose(first[1], geometry.transform_points(face.landmarks_px, matrix), atol=1e-4)


def test_training_mode_is_reproducible_for_a_seed_and_varies_between_draws(real_face):
    photo, face = real_face
    augment = FaceLandmarksAugmentation(Config(), training=True)
    box = box_to_dict(face.box_xywh)
    a = augment(photo, face.landmarks_px, box, rng=np.random.default_rng(7))
    b = augment(photo, face.landmarks_px, box, rng=np.random.default_rng(7))
    c = augment(photo, face.landmarks_px, box, rng=np.random.default_rng(8))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert np.abs(a[1] - c[1]).max() > 1.0


def test_sample_params_stay_within_the_configured_ranges():
    config = Config(rotation_deg=10.0, box_scale_jitter=0.1, box_shift_jitter=0.05, flip_prob=0.5)
    augment = FaceLandmarksAugmentation(config, training=True)
    rng = np.random.default_rng(0)
    draws = [augment.sample_params(rng) for _ in range(500)]
    angles = np.array([d["angle_deg"] for d in draws])
    scales = np.array([d["scale"] for d in draws])
    shifts = np.array([d["shift_xy"] for d in draws])
    assert np.abs(angles).max() <= 10.0 and np.abs(angles).max() > 9.0
    assert 0.9 <= scales.min() and scales.max() <= 1.1
    assert np.abs(shifts).max() <= 0.05
    assert 0.4 < np.mean([d["flip"] for d in draws]) < 0.6
    no_flip = FaceLandmarksAugmentation(Config(flip_prob=0.0), training=True)
    assert not any(no_flip.sample_params(rng)["flip"] for _ in range(100))


# ---------------------------------------------------------------------------------------
# Input formats and the network input
# ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def colour_photo(real_face):
    """A colour version of the real photo (the grey photo in three tinted channels)."""
    photo, face = real_face
    rgb = np.dstack([photo, np.clip(photo * 0.9 + 10, 0, 255), np.clip(photo * 1.1, 0, 255)])
    return rgb.astype(np.uint8), face


@pytest.mark.parametrize("kind", ["rgb array", "pil rgb", "grey 2-D array", "pil grey"])
@pytest.mark.parametrize("training", [False, True])
def test_accepts_pil_and_grey_inputs_and_returns_d_by_d_by_1_float32_in_range(colour_photo, kind, training):
    rgb, face = colour_photo
    grey = geometry.to_gray_uint8(rgb)
    image = {"rgb array": rgb, "pil rgb": Image.fromarray(rgb), "grey 2-D array": grey,
             "pil grey": Image.fromarray(grey)}[kind]
    augment = FaceLandmarksAugmentation(Config(), training=training)
    params = {"angle_deg": 5.0, "brightness": 0.3, "contrast": 1.3} if training else None
    out, landmarks = augment(image, face.landmarks_px, box_to_dict(face.box_xywh), params=params)
    assert out.shape == (DIM, DIM, 1) and out.dtype == np.float32
    assert landmarks.shape == (68, 2) and landmarks.dtype == np.float32
    assert out.min() >= -1.0 and out.max() <= 1.0
    reference, reference_landmarks = augment(rgb, face.landmarks_px, box_to_dict(face.box_xywh),
                                             params=params)
    np.testing.assert_array_equal(landmarks, reference_landmarks)
    # Grey conversions differ by at most one rounding step (OpenCV vs float weights).
    assert np.abs(out - reference).max() <= 2.0 / 127.5 + 1e-6


def test_extreme_photometric_jitter_clips_to_minus_one_one(real_face):
    photo, face = real_face
    augment = FaceLandmarksAugmentation(Config(), training=True)
    box = box_to_dict(face.box_xywh)
    bright, _ = augment(photo, face.landmarks_px, box, params={"brightness": 0.3, "contrast": 1.3})
    dark, _ = augment(photo, face.landmarks_px, box, params={"brightness": -0.3, "contrast": 1.3})
    for out in (bright, dark):
        assert out.min() >= -1.0 and out.max() <= 1.0
    assert bright.max() == 1.0 and dark.min() == -1.0
    assert bright.mean() > dark.mean() + 0.4  # 0.6 apart before clipping


def test_rejects_wrong_landmark_count_and_non_8_bit_images(real_face):
    photo, face = real_face
    augment = FaceLandmarksAugmentation(Config(), training=False)
    box = box_to_dict(face.box_xywh)
    with pytest.raises(ValueError, match="68 x 2"):
        augment(photo, face.landmarks_px[:67], box)
    with pytest.raises(ValueError, match="8-bit"):
        augment(photo.astype(np.float32), face.landmarks_px, box)


# ---------------------------------------------------------------------------------------
# Blur, noise and occlusion: pixels change, landmarks do not
# ---------------------------------------------------------------------------------------

def test_degradations_are_off_by_default_and_leave_the_older_draws_alone(real_face):
    photo, face = real_face
    box = box_to_dict(face.box_xywh)
    plain = FaceLandmarksAugmentation(Config(), training=True)
    assert set(plain.sample_params(np.random.default_rng(3))) == {
        "scale", "shift_xy", "angle_deg", "flip", "brightness", "contrast", "saturation"}
    degraded = FaceLandmarksAugmentation(Config(occlusion_prob=1.0, blur_prob=1.0, noise_std=0.05),
                                         training=True)
    params = degraded.sample_params(np.random.default_rng(3))
    older = plain.sample_params(np.random.default_rng(3))
    assert {k: params[k] for k in older} == older
    a_image, a_points = plain(photo, face.landmarks_px, box, rng=np.random.default_rng(3))
    b_image, b_points = degraded(photo, face.landmarks_px, box, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(a_points, b_points)
    assert np.abs(a_image - b_image).mean() > 0.01


def test_occlusion_paints_exactly_its_rectangle(real_face):
    photo, face = real_face
    augment = FaceLandmarksAugmentation(Config(), training=True)
    box = box_to_dict(face.box_xywh)
    base = {"angle_deg": 5.0, "contrast": 1.1}
    clean, clean_points = augment(photo, face.landmarks_px, box, params=base)
    occluded, points = augment(photo, face.landmarks_px, box, params={**base, "occlusion": (30, 50, 40, 20, 200)})
    np.testing.assert_array_equal(points, clean_points)
    inside_rect = np.zeros(clean.shape[:2], bool)
    inside_rect[50:70, 30:70] = True
    np.testing.assert_allclose(occluded[inside_rect], 200 / 127.5 - 1.0, atol=1e-6)
    np.testing.assert_array_equal(occluded[~inside_rect], clean[~inside_rect])


def test_blur_is_opencvs_gaussian_of_the_crop_and_noise_has_its_drawn_std(real_face):
    photo, face = real_face
    augment = FaceLandmarksAugmentation(Config(), training=True)
    box = box_to_dict(face.box_xywh)
    clean, _ = augment(photo, face.landmarks_px, box, params={})
    blurred, _ = augment(photo, face.landmarks_px, box, params={"blur_sigma": 1.2})
    crop = np.rint((clean[:, :, 0] + 1.0) * 127.5).astype(np.uint8)
    expected = cv2.GaussianBlur(crop, (0, 0), 1.2)
    np.testing.assert_allclose(blurred[:, :, 0], expected / 127.5 - 1.0, atol=1e-6)
    noisy, _ = augment(photo, face.landmarks_px, box, params={"noise_std": 0.04, "noise_seed": 1})
    again, _ = augment(photo, face.landmarks_px, box, params={"noise_std": 0.04, "noise_seed": 1})
    np.testing.assert_array_equal(noisy, again)
    difference = (noisy - clean) * 127.5
    unclipped = (clean > -0.7) & (clean < 0.7)  # 0.04 * 255 = 10 grey levels, far from 0 and 255
    assert np.std(difference[unclipped]) == pytest.approx(0.04 * 255, rel=0.05)
    assert abs(np.mean(difference[unclipped])) < 0.3


def test_degradation_draws_stay_within_their_settings():
    config = Config(occlusion_prob=0.5, occlusion_size=0.3, blur_prob=0.25, blur_sigma=2.0, noise_std=0.02)
    augment = FaceLandmarksAugmentation(config, training=True)
    rng = np.random.default_rng(0)
    draws = [augment.sample_params(rng) for _ in range(1000)]
    occlusions = np.array([d["occlusion"] for d in draws if "occlusion" in d])
    sigmas = np.array([d["blur_sigma"] for d in draws if "blur_sigma" in d])
    assert 0.45 < len(occlusions) / 1000 < 0.55 and 0.2 < len(sigmas) / 1000 < 0.3
    x, y, w, h, level = occlusions.T
    assert w.min() >= round(0.1 * DIM) and w.max() <= round(0.3 * DIM) and h.max() <= round(0.3 * DIM)
    assert x.min() >= 0 and (x + w).max() <= DIM and y.min() >= 0 and (y + h).max() <= DIM
    assert level.min() >= 0 and level.max() <= 255
    assert sigmas.min() >= 0.5 and sigmas.max() <= 2.0
    assert all(0 <= d["noise_std"] <= 0.02 for d in draws)
