"""Face framing and affine maps, shared by training, evaluation and predict.py.

Coordinates are pixel centres, 0-based: pixel (0, 0) covers [-0.5, 0.5] x [-0.5, 0.5], which
is what OpenCV's warpAffine and dlib's XML use. A 2x3 matrix ``M`` maps a source point
``p`` to ``M[:, :2] @ p + M[:, 2]``.

Imports NumPy and OpenCV only: this module runs on a Raspberry Pi without TensorFlow.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

NUM_LANDMARKS = 68

# Left/right mirror of the 68-point iBUG scheme (0-based): index i of a flipped face takes
# the point FLIP_PERMUTATION_68[i] of the original.
FLIP_PERMUTATION_68 = np.array(
    list(range(16, -1, -1))  # jaw 0..16
    + list(range(26, 16, -1))  # brows 17..26
    + [27, 28, 29, 30]  # nose bridge
    + [35, 34, 33, 32, 31]  # nostrils
    + [45, 44, 43, 42, 47, 46]  # left eye <- right eye
    + [39, 38, 37, 36, 41, 40]  # right eye <- left eye
    + [54, 53, 52, 51, 50, 49, 48]  # outer upper lip
    + [59, 58, 57, 56, 55]  # outer lower lip
    + [64, 63, 62, 61, 60]  # inner upper lip
    + [67, 66, 65],  # inner lower lip
    dtype=np.int64,
)

# How much source context a cached face region keeps around the nominal crop, as a multiple
# of the crop side: room for box jitter and rotation during augmentation.
REGION_CONTEXT = 1.8
# Regions are pre-shrunk (area averaging, no aliasing) until the nominal crop is at most
# this many times the network input; the augmentation warp then resamples only mildly.
MAX_PRESCALE = 1.5


def face_square(box_xywh, crop_margin: float, crop_shift_y: float = 0.0):
    """The square crop of a face box: (centre_xy, side) in source pixels."""
    x, y, w, h = (float(v) for v in box_xywh)
    if not (w > 0 and h > 0):
        raise ValueError(f"face box {list(box_xywh)} has no area")
    side = max(w, h) * (1.0 + 2.0 * crop_margin)
    # Box edges are pixel edges: a box starting at x covering w pixels spans
    # [x - 0.5, x + w - 0.5] in centre coordinates.
    centre = np.array([x + w / 2.0 - 0.5, y + h / 2.0 - 0.5 + crop_shift_y * side])
    return centre, side


def crop_matrix(centre_xy, side: float, out_dim: int, angle_deg: float = 0.0,
                flip: bool = False) -> np.ndarray:
    """Affine map taking the square (centre, side) rotated by angle_deg onto out_dim pixels.

    The face is rotated by ``angle_deg`` counter-clockwise about the crop centre (as seen on
    screen, y down), then optionally mirrored left-right.
    """
    scale = out_dim / float(side)
    theta = math.radians(angle_deg)
    cos, sin = math.cos(theta), math.sin(theta)
    # Screen-counter-clockwise rotation with y pointing down.
    linear = scale * np.array([[cos, sin], [-sin, cos]])
    if flip:
        linear = np.array([[-1.0, 0.0], [0.0, 1.0]]) @ linear
    out_centre = np.array([(out_dim - 1) / 2.0, (out_dim - 1) / 2.0])
    offset = out_centre - linear @ np.asarray(centre_xy, dtype=np.float64)
    return np.hstack([linear, offset[:, None]])


def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """outer ∘ inner for 2x3 affine matrices."""
    full_outer = np.vstack([outer, [0.0, 0.0, 1.0]])
    full_inner = np.vstack([inner, [0.0, 0.0, 1.0]])
    return (full_outer @ full_inner)[:2]


def invert(matrix: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(np.asarray(matrix, dtype=np.float64))


def transform_points(points_px: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    points = np.asarray(points_px, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def unmirror_landmarks(points_px: np.ndarray, image_dim: int) -> np.ndarray:
    """Points predicted on a left-right mirrored crop, mapped back onto the crop itself
    (x -> image_dim - 1 - x, and each point back to its own index). Any leading shape."""
    points = np.array(points_px, dtype=np.float64)
    points[..., 0] = image_dim - 1 - points[..., 0]
    return points[..., FLIP_PERMUTATION_68, :]


def warp(image: np.ndarray, matrix: np.ndarray, out_dim: int) -> np.ndarray:
    """Resample `image` once through `matrix` into an out_dim x out_dim image (black border)."""
    return cv2.warpAffine(image, np.asarray(matrix, dtype=np.float64), (out_dim, out_dim),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def crop_context(scale: float = 1.0, angle_deg: float = 0.0, shift_xy=(0.0, 0.0)) -> float:
    """The source context (a multiple of the nominal crop side, as ``REGION_CONTEXT``) that
    a crop jittered by ``scale``, ``angle_deg`` and ``shift_xy`` reads: the square that holds
    the rotated, scaled and shifted crop, plus a margin for the resampling kernels."""
    theta = math.radians(angle_deg)
    reach = scale * (abs(math.cos(theta)) + abs(math.sin(theta))) / 2.0
    reach += max(abs(float(v)) for v in shift_xy)
    return 2.0 * reach + CONTEXT_MARGIN


# Margin of crop_context, a fraction of the crop side: 0.05 is 9.6 pixels of a 192-pixel
# (pre-shrunk) crop, well past the 1 pixel that the bilinear warp reads beyond the crop.
CONTEXT_MARGIN = 0.05


def extract_region(image: np.ndarray, centre_xy, side: float, out_dim: int,
                   grey_from_bgr: bool = False, context: float = REGION_CONTEXT):
    """Cut the context around a face crop out of a (possibly huge) image.

    Returns ``(region, matrix)``: ``region`` is a small image holding the square of side
    ``context * side`` around the face (zero-padded past the image edge), shrunk by
    area averaging when the crop would be more than ``MAX_PRESCALE * out_dim`` pixels, and
    ``matrix`` maps source pixels to region pixels. Every path that frames a face goes
    through here, so training, evaluation and inference see the same framing. Evaluation
    and inference see the same pixels; a training crop, cut from its cached region, can
    differ from them only by where the area averaging's pixel grid falls (no pixel
    differs for a face small enough not to be shrunk).

    ``grey_from_bgr``: ``image`` is a BGR photo, and only the part cut out is converted to
    grey. The conversion works pixel by pixel, so the region is exactly the one cut from the
    converted photo, without converting the whole photo for every face.

    ``context``: the default ``REGION_CONTEXT`` leaves room for any augmentation (the
    training cache); framing one crop needs only ``crop_context`` of its jitter, and
    shrinking the smaller region costs about a third as much (predict.py's per-face time).
    """
    half = context * side / 2.0
    x0 = int(math.floor(centre_xy[0] - half))
    y0 = int(math.floor(centre_xy[1] - half))
    x1 = int(math.ceil(centre_xy[0] + half)) + 1
    y1 = int(math.ceil(centre_xy[1] + half)) + 1
    height, width = image.shape[:2]
    pad = (max(0, -y0), max(0, y1 - height), max(0, -x0), max(0, x1 - width))
    region = image[max(0, y0):min(height, y1), max(0, x0):min(width, x1)]
    if grey_from_bgr:
        region = (cv2.cvtColor(region, cv2.COLOR_BGR2GRAY) if region.size
                  else np.zeros(region.shape[:2], dtype=region.dtype))
    if any(pad):
        region = cv2.copyMakeBorder(region, *pad, borderType=cv2.BORDER_CONSTANT, value=0)
    matrix = np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0]])
    shrink = (MAX_PRESCALE * out_dim) / side
    if shrink < 1.0:
        src_h, src_w = region.shape[:2]
        dst_w, dst_h = max(1, round(src_w * shrink)), max(1, round(src_h * shrink))
        region = cv2.resize(region, (dst_w, dst_h), interpolation=cv2.INTER_AREA)
        # cv2.resize maps pixel centres as x_dst = (x_src + 0.5) * dst / src - 0.5.
        sx, sy = dst_w / src_w, dst_h / src_h
        resize = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5]])
        matrix = compose(resize, matrix)
    return np.ascontiguousarray(region), matrix


def to_gray_uint8(image: np.ndarray) -> np.ndarray:
    """Any decoded image (grey, RGB, RGBA; 8 or 16 bit) as an 8-bit grey image."""
    if image.dtype == np.uint16:
        image = (image // 257).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ValueError(f"unsupported pixel type {image.dtype}")
    if image.ndim == 2:
        return image
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_RGBA2GRAY)
    if image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if image.shape[2] == 1:
        return image[:, :, 0]
    raise ValueError(f"unsupported channel count {image.shape[2]}")


def gray_to_input(image_gray: np.ndarray) -> np.ndarray:
    """uint8 grey HxW -> float32 HxWx1 in [-1, 1], the network's input."""
    return (image_gray.astype(np.float32) / 127.5 - 1.0)[:, :, None]


def px_to_norm(points_px: np.ndarray, image_dim: int) -> np.ndarray:
    """Crop pixels (centre convention) -> [-0.5, 0.5], the network's target."""
    return ((np.asarray(points_px, dtype=np.float32) + 0.5) / image_dim - 0.5).astype(np.float32)


def norm_to_px(points_norm: np.ndarray, image_dim: int) -> np.ndarray:
    return ((np.asarray(points_norm, dtype=np.float64) + 0.5) * image_dim - 0.5)


def box_iou(box_a, box_b) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ax, ay, aw, ah = box_a
    bx, by, bw, bh = box_b
    inter_w = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    inter_h = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = inter_w * inter_h
    union = aw * ah + bw * bh - inter
    return float(inter / union) if union > 0 else 0.0


def box_from_landmarks(landmarks_px: np.ndarray):
    """A face box (x, y, w, h) for faces that come with landmarks only (.pts folders).

    Mimics dlib's HOG detector box, which the training boxes come from: a square about as
    wide as the jaw, from the brows to the chin. The factors were fitted on the 300-W
    training faces whose HOG box is known (see tests/test_dataset.py).
    """
    points = np.asarray(landmarks_px, dtype=np.float64)
    x_min, y_min = points.min(axis=0)
    x_max, y_max = points.max(axis=0)
    width, height = x_max - x_min, y_max - y_min
    side = BOX_FROM_LANDMARKS_SCALE * max(width, height)
    cx = (x_min + x_max) / 2.0
    cy = (y_min + y_max) / 2.0 + BOX_FROM_LANDMARKS_SHIFT_Y * max(width, height)
    return (cx - side / 2.0 + 0.5, cy - side / 2.0 + 0.5, side, side)


def box_from_landmarks_upright(landmarks_px: np.ndarray, roll_deg: float) -> tuple:
    """The training-convention box (x, y, w, h) of a face rolled by ``roll_deg``: the
    points are turned upright about their mean, boxed by geometry.box_from_landmarks, and
    the box centre is turned back. ``landmarks_px``: [68, 2]."""
    points = np.asarray(landmarks_px, dtype=np.float64)
    pivot = points.mean(axis=0)
    theta = math.radians(roll_deg)
    cos, sin = math.cos(theta), math.sin(theta)
    to_upright = np.array([[cos, sin], [-sin, cos]])  # screen-counter-clockwise by roll (y down)
    upright = (points - pivot) @ to_upright.T + pivot
    x, y, w, h = box_from_landmarks(upright)
    centre_upright = np.array([x + w / 2, y + h / 2])
    cx, cy = (centre_upright - pivot) @ to_upright + pivot  # the inverse rotation
    return (cx - w / 2, cy - h / 2, w, h)


BOX_FROM_LANDMARKS_SCALE = 0.966
BOX_FROM_LANDMARKS_SHIFT_Y = -0.093


# The person's right eye (on the image's left for a frontal face) and left eye, 68-point scheme.
RIGHT_EYE_68 = slice(36, 42)
LEFT_EYE_68 = slice(42, 48)


def roll_from_eyes(right_eye_xy, left_eye_xy) -> float:
    """The in-plane angle of the eye line in the photo, degrees: 0 for level eyes, positive
    when the eye on the image's right is lower (y points down). ``right_eye_xy`` is the
    person's right eye. As ``angle_deg`` of frame_face/crop_matrix it levels the eyes."""
    dx, dy = np.asarray(left_eye_xy, dtype=np.float64) - np.asarray(right_eye_xy, dtype=np.float64)
    return math.degrees(math.atan2(dy, dx))


def roll_from_landmarks(landmarks_px: np.ndarray) -> float:
    """roll_from_eyes of the two eye centres of 68 points [68, 2]."""
    points = np.asarray(landmarks_px, dtype=np.float64)
    return roll_from_eyes(points[RIGHT_EYE_68].mean(axis=0), points[LEFT_EYE_68].mean(axis=0))


def roll_shift_correction(crop_shift_y: float, roll_deg: float) -> tuple[float, float]:
    """frame_face's ``shift_xy`` that moves the crop_shift_y shift (applied down the photo's
    vertical) onto the face's own vertical, for a face rolled by ``roll_deg``: its "down" is
    (-sin, cos) of the roll in the photo (y down)."""
    theta = math.radians(roll_deg)
    return (-crop_shift_y * math.sin(theta), crop_shift_y * (math.cos(theta) - 1.0))


def frame_face(image: np.ndarray, box_xywh, image_dim: int, crop_margin: float,
               crop_shift_y: float = 0.0, angle_deg: float = 0.0, flip: bool = False,
               scale: float = 1.0, shift_xy=(0.0, 0.0), grey_from_bgr: bool = False):
    """Crop one face to image_dim x image_dim with a single affine resampling.

    ``scale``/``shift_xy`` (fractions of the crop side), ``angle_deg`` and ``flip`` are the
    augmentation's jitter; with their defaults this is the deterministic crop used by
    evaluation and predict.py. Returns ``(crop, matrix)`` where ``matrix`` maps source pixels
    to crop pixels (apply it to landmarks; invert it to map predictions back). With
    ``grey_from_bgr`` the image is a BGR photo and the crop is grey (``extract_region``).
    """
    centre, side = face_square(box_xywh, crop_margin, crop_shift_y)
    # Only the context this crop reads (never more than the training cache keeps).
    context = min(REGION_CONTEXT, crop_context(scale, angle_deg, shift_xy))
    region, to_region = extract_region(image, centre, side, image_dim, grey_from_bgr, context)
    jittered_centre = centre + np.asarray(shift_xy, dtype=np.float64) * side
    to_crop = crop_matrix(jittered_centre, side * scale, image_dim, angle_deg, flip)
    crop = warp(region, compose(to_crop, invert(to_region)), image_dim)
    return crop, to_crop


def frame_face_upright(image: np.ndarray, box_xywh, image_dim: int, crop_margin: float,
                       crop_shift_y: float, roll_deg: float = 0.0, grey_from_bgr: bool = False):
    """frame_face for a face rolled by ``roll_deg`` in the photo (a detector's estimate): the
    crop is turned upright, and the framing's downward shift follows the face's own vertical
    (roll_shift_correction). How predict.py and evaluate.py frame a detected face."""
    return frame_face(image, box_xywh, image_dim, crop_margin, crop_shift_y, angle_deg=roll_deg,
                      shift_xy=roll_shift_correction(crop_shift_y, roll_deg),
                      grey_from_bgr=grey_from_bgr)
