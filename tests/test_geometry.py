"""geometry.py: the framing, the affine maps and the flip permutation, checked exactly.

Pixel-level claims are checked by drawing Gaussian dots at known sub-pixel points, pushing
the image through the code under test and finding each dot again: a dot must land within
a pixel of where the returned matrix says its point went, and on average within a tenth
of a pixel (a half-pixel slip of convention shows up as ~0.4 px on every point).
"""

import math

import numpy as np
import pytest

import geometry
from conftest import dot_centroid_near, draw_dots, grid_landmarks, inside

MAX_ERROR_PX = 1.0
MEAN_ERROR_PX = 0.1
DIM = 128

MIDLINE = {8, 27, 28, 29, 30, 33, 51, 57, 62, 66}  # chin, nose ridge and tip, mouth centre


def dot_errors(image, points_px, radius=4, border=5, min_points=30):
    """Distances from each predicted point (well inside the image) to the dot found there."""
    points_px = np.asarray(points_px)
    keep = inside(points_px, image.shape[0], border)
    assert keep.sum() >= min_points, "too few points inside the crop to judge"
    return np.array([np.linalg.norm(dot_centroid_near(image, p, radius) - p)
                     for p in points_px[keep]])


def assert_dots_on_points(image, points_px, mean_px=MEAN_ERROR_PX, radius=4):
    errors = dot_errors(image, points_px, radius)
    assert errors.max() <= MAX_ERROR_PX, f"worst dot {errors.max():.3f} px off its point"
    assert errors.mean() <= mean_px, f"dots {errors.mean():.3f} px off their points on average"


# ---------------------------------------------------------------------------------------
# The flip permutation
# ---------------------------------------------------------------------------------------

def test_flip_permutation_is_an_involution_over_all_68_points():
    flip = geometry.FLIP_PERMUTATION_68
    assert sorted(flip.tolist()) == list(range(68))
    np.testing.assert_array_equal(flip[flip], np.arange(68))


def test_flip_permutation_fixes_exactly_the_midline_points():
    flip = geometry.FLIP_PERMUTATION_68
    assert {i for i in range(68) if flip[i] == i} == MIDLINE


@pytest.mark.parametrize("left, right", [
    (0, 16), (8, 8), (17, 26), (21, 22), (31, 35), (36, 45), (39, 42), (37, 44), (41, 46),
    (40, 47), (48, 54), (50, 52), (55, 59), (60, 64), (61, 63), (65, 67)])
def test_flip_permutation_swaps_mirror_partners(left, right):
    flip = geometry.FLIP_PERMUTATION_68
    assert flip[left] == right and flip[right] == left


def eye_aligned(landmarks_px):
    """Points about their centroid, rotated so the outer eye corners are level, in units of
    the inter-ocular distance."""
    points = np.asarray(landmarks_px, dtype=np.float64)
    eye_line = points[45] - points[36]
    angle = math.atan2(eye_line[1], eye_line[0])
    rotation = np.array([[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]])
    return (points - points.mean(axis=0)) @ rotation.T / np.linalg.norm(eye_line)


def test_mirrored_mean_face_matches_the_mean_face(train_faces):
    """A frontal face is nearly symmetric: mirroring the mean frontal 300-W face and relabelling
    it with the permutation gives it back (within 0.03 inter-ocular distances), while any
    wrongly paired point would move by 0.09 or more."""
    def yaw(points):  # nose tip off the eyes' midpoint, in inter-ocular distances
        return (points[30, 0] - (points[36, 0] + points[45, 0]) / 2) / np.linalg.norm(points[45] - points[36])

    frontal = [f.landmarks_px for f in train_faces if abs(yaw(f.landmarks_px)) < 0.05]
    assert len(frontal) > 300
    mean_shape = np.mean([eye_aligned(points) for points in frontal], axis=0)
    relabelled = (mean_shape * [-1.0, 1.0])[geometry.FLIP_PERMUTATION_68]
    error = np.linalg.norm(relabelled - mean_shape, axis=1)
    assert error.max() < 0.05, f"point {error.argmax()} is {error.max():.3f} inter-ocular distances off"


# ---------------------------------------------------------------------------------------
# Conventions: pixel centres, crop edges, normalised coordinates
# ---------------------------------------------------------------------------------------

def test_face_square_centres_on_the_box_in_pixel_centre_coordinates():
    # Pixels 10..19 (w = 10) have their centre at 14.5.
    centre, side = geometry.face_square((10, 20, 10, 6), crop_margin=0.0)
    np.testing.assert_allclose(centre, [14.5, 22.5])
    assert side == 10
    centre, side = geometry.face_square((10, 20, 10, 6), crop_margin=0.2, crop_shift_y=0.1)
    assert side == pytest.approx(14.0)
    np.testing.assert_allclose(centre, [14.5, 22.5 + 1.4])


def test_face_square_rejects_an_empty_box():
    with pytest.raises(ValueError, match="no area"):
        geometry.face_square((5, 5, 0, 10), crop_margin=0.2)


@pytest.mark.parametrize("angle_deg", [0.0, 30.0])
@pytest.mark.parametrize("flip", [False, True])
def test_crop_square_edges_map_to_output_pixel_edges_and_plus_minus_half(angle_deg, flip):
    centre, side = np.array([200.25, 150.75]), 97.0
    matrix = geometry.crop_matrix(centre, side, DIM, angle_deg=angle_deg, flip=flip)
    # The square's axis-aligned edge midpoints, rotated with the crop.
    theta = math.radians(angle_deg)
    u = np.array([math.cos(theta), math.sin(theta)])  # the crop's +x axis in the source
    v = np.array([-math.sin(theta), math.cos(theta)])  # the crop's +y axis
    left, right = centre - u * side / 2, centre + u * side / 2
    top, bottom = centre - v * side / 2, centre + v * side / 2
    out = geometry.transform_points(np.array([left, right, top, bottom, centre]), matrix)
    lo, hi = -0.5, DIM - 0.5
    expected_x = (hi, lo) if flip else (lo, hi)
    np.testing.assert_allclose(out[0], [expected_x[0], (DIM - 1) / 2], atol=1e-9)
    np.testing.assert_allclose(out[1], [expected_x[1], (DIM - 1) / 2], atol=1e-9)
    np.testing.assert_allclose(out[2], [(DIM - 1) / 2, lo], atol=1e-9)
    np.testing.assert_allclose(out[3], [(DIM - 1) / 2, hi], atol=1e-9)
    np.testing.assert_allclose(out[4], [(DIM - 1) / 2, (DIM - 1) / 2], atol=1e-9)
    norm = geometry.px_to_norm(out[:4], DIM)
    assert set(np.round(norm.ravel(), 6)) == {-0.5, 0.0, 0.5}


def test_px_to_norm_maps_crop_edges_to_plus_minus_half_and_centre_to_zero():
    edges = np.array([[-0.5, -0.5], [DIM - 0.5, DIM - 0.5], [(DIM - 1) / 2, (DIM - 1) / 2]])
    np.testing.assert_allclose(geometry.px_to_norm(edges, DIM),
                               [[-0.5, -0.5], [0.5, 0.5], [0.0, 0.0]], atol=1e-7)
    assert geometry.px_to_norm(edges, DIM).dtype == np.float32


def test_px_to_norm_and_norm_to_px_round_trip():
    rng = np.random.default_rng(0)
    points_px = rng.uniform(-10, DIM + 10, size=(68, 2))
    np.testing.assert_allclose(geometry.norm_to_px(geometry.px_to_norm(points_px, DIM), DIM),
                               points_px, atol=1e-4)  # float32 in between
    points_norm = rng.uniform(-0.5, 0.5, size=(68, 2))
    np.testing.assert_allclose(geometry.px_to_norm(geometry.norm_to_px(points_norm, DIM), DIM),
                               points_norm, atol=1e-6)


def test_rotation_is_counter_clockwise_on_screen():
    matrix = geometry.crop_matrix((100.0, 100.0), 100.0, DIM, angle_deg=90.0)
    right_of_centre = geometry.transform_points(np.array([[130.0, 100.0]]), matrix)[0]
    centre = (DIM - 1) / 2
    # y points down: a point right of the centre turns to above it.
    np.testing.assert_allclose(right_of_centre, [centre, centre - 30 * DIM / 100], atol=1e-9)


def test_compose_and_invert_agree_with_applying_maps_in_turn():
    rng = np.random.default_rng(1)
    a = geometry.crop_matrix((50.0, 60.0), 80.0, DIM, angle_deg=12.0, flip=True)
    b = np.array([[0.7, 0.1, 3.0], [-0.2, 0.9, -4.0]])
    points = rng.uniform(0, 100, size=(10, 2))
    np.testing.assert_allclose(geometry.transform_points(points, geometry.compose(a, b)),
                               geometry.transform_points(geometry.transform_points(points, b), a))
    np.testing.assert_allclose(geometry.transform_points(geometry.transform_points(points, a),
                                                         geometry.invert(a)), points, atol=1e-9)


# ---------------------------------------------------------------------------------------
# Pixels and points stay in register
# ---------------------------------------------------------------------------------------

JITTERS = {
    "none": {},
    "rotation": {"angle_deg": 13.0},
    "rotation_negative": {"angle_deg": -9.5},
    "flip": {"flip": True},
    "zoom_in": {"scale": 0.9},
    "zoom_out": {"scale": 1.1},
    "shift": {"shift_xy": (0.07, -0.05)},
    "all": {"angle_deg": -12.0, "flip": True, "scale": 1.07, "shift_xy": (-0.06, 0.04)},
}


@pytest.mark.parametrize("jitter", JITTERS.values(), ids=JITTERS.keys())
def test_frame_face_moves_points_with_the_pixels(jitter):
    box = (100.0, 90.0, 200.0, 190.0)
    points = grid_landmarks(box)
    image = draw_dots(np.zeros((400, 420), np.uint8), points, sigma=2.5, amplitude=220)
    crop, matrix = geometry.frame_face(image, box, DIM, 0.2, 0.06, **jitter)
    assert crop.shape == (DIM, DIM) and crop.dtype == np.uint8
    assert_dots_on_points(crop, geometry.transform_points(points, matrix))


@pytest.fixture(scope="module")
def huge_image():
    """A 4000 x 3000 photo with a 1500 px face: the pre-shrink path."""
    box = (1700.3, 900.6, 1500.0, 1500.0)
    points = grid_landmarks(box)
    image = draw_dots(np.full((3000, 4000), 30, np.uint8), points, sigma=20, amplitude=200)
    return image, box, points


def test_extract_region_pre_shrinks_a_huge_face_and_keeps_points_exact(huge_image):
    image, box, points = huge_image
    centre, side = geometry.face_square(box, 0.2, 0.06)
    region, matrix = geometry.extract_region(image, centre, side, DIM)
    # The crop is shrunk to at most MAX_PRESCALE x the network input before the warp.
    scale = math.sqrt(abs(np.linalg.det(matrix[:, :2])))
    assert side * scale <= geometry.MAX_PRESCALE * DIM + 1
    assert max(region.shape) <= geometry.REGION_CONTEXT * geometry.MAX_PRESCALE * DIM + 2
    errors = dot_errors(region, geometry.transform_points(points, matrix), radius=6)
    assert errors.max() <= MAX_ERROR_PX and errors.mean() <= MEAN_ERROR_PX, errors.max()


@pytest.mark.parametrize("jitter", [JITTERS["none"], JITTERS["all"]], ids=["none", "all"])
def test_frame_face_on_a_huge_image_keeps_points_exact(huge_image, jitter):
    image, box, points = huge_image
    crop, matrix = geometry.frame_face(image, box, DIM, 0.2, 0.06, **jitter)
    assert_dots_on_points(crop, geometry.transform_points(points, matrix))


def test_extract_region_pads_past_the_image_edge_and_keeps_points_exact():
    # A face in the top-left corner: the region reaches past the image and is zero-padded.
    box = (-20.0, -30.0, 160.0, 160.0)
    points = grid_landmarks(box)
    # Black like the padding, so the dot finder sees one flat background.
    image = draw_dots(np.zeros((300, 300), np.uint8), points, sigma=2.5, amplitude=180)
    centre, side = geometry.face_square(box, 0.2, 0.06)
    region, matrix = geometry.extract_region(image, centre, side, DIM)
    origin = geometry.transform_points(np.array([[0.0, 0.0]]), matrix)[0]
    assert origin[0] > 10 and origin[1] > 10  # the image starts inside the region
    assert region[:int(origin[1]) - 1].max() == 0 and region[:, :int(origin[0]) - 1].max() == 0
    assert region[int(origin[1]) + 2:, int(origin[0]) + 2:].max() > 100  # the dots
    crop, to_crop = geometry.frame_face(image, box, DIM, 0.2, 0.06)
    in_image = inside(points, 300, 8)
    assert_dots_on_points(crop, geometry.transform_points(points[in_image], to_crop))


def test_frame_face_matrix_maps_crop_points_back_to_the_photo():
    """predict.py inverts the matrix to put predictions back on the photo."""
    box = (40.0, 50.0, 120.0, 130.0)
    points = grid_landmarks(box)
    _, matrix = geometry.frame_face(np.zeros((300, 300), np.uint8), box, DIM, 0.2, 0.06,
                                    angle_deg=7.0, flip=True, scale=0.95, shift_xy=(0.02, 0.01))
    back = geometry.transform_points(geometry.transform_points(points, matrix), geometry.invert(matrix))
    np.testing.assert_allclose(back, points, atol=1e-9)


# ---------------------------------------------------------------------------------------
# Pixel formats and the network input
# ---------------------------------------------------------------------------------------

def test_to_gray_uint8_accepts_grey_rgb_rgba_and_16_bit():
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
    grey = geometry.to_gray_uint8(rgb)
    assert grey.shape == (20, 30) and grey.dtype == np.uint8
    rgba = np.dstack([rgb, np.full((20, 30), 255, np.uint8)])
    np.testing.assert_array_equal(geometry.to_gray_uint8(rgba), grey)
    np.testing.assert_array_equal(geometry.to_gray_uint8(rgb.astype(np.uint16) * 257), grey)
    np.testing.assert_array_equal(geometry.to_gray_uint8(grey), grey)
    np.testing.assert_array_equal(geometry.to_gray_uint8(grey[:, :, None]), grey)
    with pytest.raises(ValueError, match="pixel type"):
        geometry.to_gray_uint8(rgb.astype(np.float32))


def test_gray_to_input_spans_minus_one_to_one_as_float32_d_by_d_by_1():
    grey = np.array([[0, 255], [127, 128]], np.uint8)
    network_input = geometry.gray_to_input(grey)
    assert network_input.shape == (2, 2, 1) and network_input.dtype == np.float32
    assert network_input[0, 0, 0] == -1.0 and network_input[0, 1, 0] == 1.0
    assert abs(network_input[1, 0, 0]) < 0.01 and abs(network_input[1, 1, 0]) < 0.01


def test_box_iou_by_hand():
    assert geometry.box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert geometry.box_iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert geometry.box_iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0
    assert geometry.box_iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0


@pytest.mark.parametrize("box, angle, shift", [
    ((200.0, 150.0, 120.0, 130.0), 0.0, (0.0, 0.0)),  # inside the photo, pre-shrunk
    ((-60.3, -40.7, 150.0, 150.0), 25.0, (0.02, -0.05)),  # past the left and top edges
    ((560.5, 420.2, 90.0, 80.0), -35.0, (0.0, 0.03)),  # past the right and bottom edges
    ((20.0, 30.0, 40.0, 40.0), 10.0, (0.0, 0.0)),  # small: no pre-shrink
    ((-500.0, 100.0, 300.0, 300.0), 0.0, (0.0, 0.0)),  # the region is mostly padding
])
def test_frame_face_converts_only_the_region_of_a_colour_photo_to_the_same_pixels(box, angle, shift):
    """frame_face(bgr, grey_from_bgr=True) gives exactly the crop and matrix of framing the
    photo converted to grey as a whole, without converting the whole photo."""
    import cv2

    rng = np.random.default_rng(7)
    bgr = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    whole = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    crop, matrix = geometry.frame_face(whole, box, 128, 0.2, 0.06, angle_deg=angle, shift_xy=shift)
    windowed, windowed_matrix = geometry.frame_face(bgr, box, 128, 0.2, 0.06, angle_deg=angle,
                                                    shift_xy=shift, grey_from_bgr=True)
    assert windowed.shape == crop.shape == (128, 128)
    np.testing.assert_array_equal(windowed, crop)
    np.testing.assert_array_equal(windowed_matrix, matrix)


# ---------------------------------------------------------------------------------------
# frame_face reads only the context its crop needs
# ---------------------------------------------------------------------------------------

def test_crop_context_by_hand():
    margin = geometry.CONTEXT_MARGIN
    assert geometry.crop_context() == pytest.approx(1.0 + margin)
    assert geometry.crop_context(angle_deg=45.0) == pytest.approx(math.sqrt(2) + margin)
    assert geometry.crop_context(angle_deg=-90.0) == pytest.approx(1.0 + margin)
    # scale 1.1 at 14 degrees: 1.1 * (cos + sin) = 1.3328; a 0.08 shift adds 0.16 across.
    assert geometry.crop_context(1.1, 14.0, (0.08, -0.03)) == pytest.approx(
        1.1 * (math.cos(math.radians(14)) + math.sin(math.radians(14))) + 0.16 + margin)
    # The training cache keeps enough for the widest default augmentation.
    assert geometry.crop_context(1.1, 14.0, (0.08, 0.08)) < geometry.REGION_CONTEXT


def frame_from_full_region(image, box, angle_deg=0.0, flip=False, scale=1.0, shift_xy=(0.0, 0.0)):
    """frame_face's crop cut from a REGION_CONTEXT region, as before crop_context."""
    centre, side = geometry.face_square(box, 0.2, 0.06)
    region, to_region = geometry.extract_region(image, centre, side, DIM, context=geometry.REGION_CONTEXT)
    to_crop = geometry.crop_matrix(centre + np.asarray(shift_xy) * side, side * scale, DIM, angle_deg, flip)
    return geometry.warp(region, geometry.compose(to_crop, geometry.invert(to_region)), DIM), to_crop


@pytest.mark.parametrize("jitter", [*JITTERS.values(), {"angle_deg": 40.0, "scale": 1.1},
                                    {"angle_deg": -90.0}, {"angle_deg": 45.0, "shift_xy": (0.08, 0.08)}],
                         ids=[*JITTERS.keys(), "roll40", "roll90", "roll45_shift"])
def test_frame_face_without_pre_shrink_gives_exactly_the_full_region_crop(jitter):
    """No pixel of any crop comes from outside the smaller region: on random pixels (a
    150-pixel face, no pre-shrink), the crop is the one cut from the full training context."""
    rng = np.random.default_rng(3)
    image = rng.integers(1, 256, (400, 420), dtype=np.uint8)
    box = (140.0, 120.0, 110.0, 100.0)
    crop, matrix = geometry.frame_face(image, box, DIM, 0.2, 0.06, **jitter)
    expected, expected_matrix = frame_from_full_region(image, box, **jitter)
    np.testing.assert_array_equal(crop, expected)
    np.testing.assert_allclose(matrix, expected_matrix)


def test_frame_face_of_a_pre_shrunk_face_differs_from_the_full_region_by_resampling_phase_only(huge_image):
    image, box, points = huge_image
    crop, matrix = geometry.frame_face(image, box, DIM, 0.2, 0.06, angle_deg=20.0)
    expected, expected_matrix = frame_from_full_region(image, box, angle_deg=20.0)
    np.testing.assert_allclose(matrix, expected_matrix)
    assert np.abs(crop.astype(int) - expected).mean() < 0.5
    assert_dots_on_points(crop, geometry.transform_points(points, matrix))
