"""Training augmentation: every geometric change is one composed affine map.

Box jitter (scale and shift, so that boxes from other face detectors work at inference),
rotation about the face centre, horizontal flip and the crop/resize compose into a single
2x3 matrix; the image is resampled once through it and the landmarks are moved by the same
matrix, so points and pixels stay exactly in register.

Then the pixels alone change (the landmarks stay where they are): blur, contrast and
brightness, noise, and an occluding rectangle, each only when its setting is on.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

import geometry
from config import Config


class FaceLandmarksAugmentation:
    """``aug(image, landmarks, crops_coordinates) -> (image, landmarks)``.

    - ``image``: a PIL image, an HxWx3 uint8 RGB array or an HxW grey array.
    - ``landmarks``: 68 x 2 points in image pixels (0-based).
    - ``crops_coordinates``: the face box, ``{"left", "top", "width", "height"}``.

    Returns an ``image_dim x image_dim x 1`` float32 image in [-1, 1] and 68 x 2 float32
    landmarks in that output image's pixels. With ``training=False`` it is the deterministic
    crop that evaluation and predict.py use.
    """

    def __init__(self, config: Config, training: bool = True):
        self.config = config
        self.training = training

    def sample_params(self, rng: np.random.Generator) -> dict:
        """One random draw of the augmentation's parameters."""
        c = self.config
        return {
            "scale": float(rng.uniform(1 - c.box_scale_jitter, 1 + c.box_scale_jitter)),
            "shift_xy": tuple(rng.uniform(-c.box_shift_jitter, c.box_shift_jitter, size=2)),
            "angle_deg": float(rng.uniform(-c.rotation_deg, c.rotation_deg)),
            "flip": bool(rng.random() < c.flip_prob),
            "brightness": float(rng.uniform(-c.brightness, c.brightness)),
            "contrast": float(rng.uniform(1 - c.contrast, 1 + c.contrast)),
            "saturation": float(rng.uniform(1 - c.saturation, 1 + c.saturation)),
            **self._sample_degradations(rng),
        }

    def _sample_degradations(self, rng: np.random.Generator) -> dict:
        """Blur, noise and occlusion draws. Each is drawn only when its setting is on, so
        that with them off every other parameter is the same draw as before they existed."""
        c, d = self.config, self.config.image_dim
        params = {}
        if c.blur_prob > 0 and rng.random() < c.blur_prob:
            params["blur_sigma"] = float(rng.uniform(0.5, c.blur_sigma))
        if c.noise_std > 0:
            params["noise_std"] = float(rng.uniform(0.0, c.noise_std))
            params["noise_seed"] = int(rng.integers(1 << 31))
        if c.occlusion_prob > 0 and rng.random() < c.occlusion_prob:
            width, height = (int(round(v * d)) for v in rng.uniform(0.1, c.occlusion_size, size=2))
            params["occlusion"] = (int(rng.integers(0, d - width + 1)), int(rng.integers(0, d - height + 1)),
                                   width, height, int(rng.integers(0, 256)))
        return params

    def __call__(self, image, landmarks, crops_coordinates, rng=None, params=None):
        image = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
        if image.dtype != np.uint8:
            raise ValueError(f"expected an 8-bit image, got {image.dtype}")
        landmarks = np.asarray(landmarks, dtype=np.float64)
        if landmarks.shape != (geometry.NUM_LANDMARKS, 2):
            raise ValueError(f"expected {geometry.NUM_LANDMARKS} x 2 landmarks, got {landmarks.shape}")
        box = tuple(float(crops_coordinates[k]) for k in ("left", "top", "width", "height"))
        if params is None:
            params = self.sample_params(rng or np.random.default_rng()) if self.training else {}
        c = self.config
        crop, matrix = geometry.frame_face(
            image, box, c.image_dim, c.crop_margin, c.crop_shift_y,
            angle_deg=params.get("angle_deg", 0.0), flip=params.get("flip", False),
            scale=params.get("scale", 1.0), shift_xy=params.get("shift_xy", (0.0, 0.0)))
        landmarks_out = geometry.transform_points(landmarks, matrix)
        if params.get("flip", False):
            landmarks_out = landmarks_out[geometry.FLIP_PERMUTATION_68]
        gray = self._photometric(crop, params)
        return geometry.gray_to_input(gray), landmarks_out.astype(np.float32)

    @staticmethod
    def _photometric(crop: np.ndarray, params: dict) -> np.ndarray:
        """Blur, saturation (colour only), grey conversion, contrast, brightness, noise and
        occlusion; uint8 out.

        - ``blur_sigma``: cv2.GaussianBlur of the crop with that sigma (kernel from OpenCV).
        - ``noise_std``/``noise_seed``: N(0, std * 255) added to every pixel.
        - ``occlusion``: (x, y, width, height, level): those pixels are set to ``level``.
        """
        if "blur_sigma" in params:
            crop = cv2.GaussianBlur(crop, (0, 0), params["blur_sigma"])
        pixels = crop.astype(np.float32)
        if pixels.ndim == 3:
            if "saturation" in params:
                grey = pixels @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
                pixels = grey[:, :, None] + params["saturation"] * (pixels - grey[:, :, None])
            pixels = np.clip(pixels, 0, 255) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        if "contrast" in params:
            mean = pixels.mean()
            pixels = (pixels - mean) * params["contrast"] + mean
        if "brightness" in params:
            pixels = pixels + params["brightness"] * 127.5
        if "noise_std" in params:
            noise = np.random.default_rng(params["noise_seed"]).standard_normal(pixels.shape, np.float32)
            pixels = pixels + noise * (params["noise_std"] * 255.0)
        if "occlusion" in params:
            x, y, width, height, level = params["occlusion"]
            pixels[y:y + height, x:x + width] = level
        return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
