"""Network architectures: ``build_network(arch, image_dim)`` -> keras.Model.

- ``xception``: the seed's Xception-like regressor (entry convs, separable residual blocks
  of 128/256/728 channels, 8 middle blocks, exit block, Dense(136)). About 21 M parameters.
- ``mobile``: for the Raspberry Pi: MobileNetV2-style inverted residual blocks, a small
  feature pyramid, one 16 x 16 heatmap per landmark and a soft-argmax that turns each into
  (x, y). 0.50 M parameters and 90 MFLOPs at 128 x 128.
- ``mobile-wide``: the same with 1.5 x the channels (1.1 M parameters, 200 MFLOPs): the
  shipped model. ``mobile-s4``: ``mobile`` with 32 x 32 heatmaps (98 MFLOPs).
- ``mobile-wide-nrm``: ``mobile-wide`` whose head also gives, in every heatmap cell, each
  point's offset from the cell and the offsets of its contour neighbours (PIPNet's neighbour
  regression, Jin et al. 2021); each point is the mean of its own estimate and its
  neighbours' estimates of it (OffsetSoftArgmax2D).
- ``mobile-wide-s4``: ``mobile-wide`` with 32 x 32 heatmaps (216 MFLOPs).

Both take a grey ``image_dim x image_dim x 1`` image in [-1, 1] and return 136 numbers:
the 68 (x, y) landmarks in [-0.5, 0.5] crop coordinates.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

NUM_OUTPUTS = 136
# BatchNormalization momentum 0.9 everywhere: the moving statistics must keep up on short
# CPU schedules (0.999, as in Keras' MobileNet builders, lags so far that validation NME stays ~30 %).
BN_MOMENTUM = 0.9


def _conv_bn(x, filters, kernel, strides=1, name=None, activation="relu"):
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False,
                      name=name and f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=name and f"{name}_bn")(x)
    return layers.Activation(activation, name=name and f"{name}_act")(x) if activation else x


def _sep_bn(x, filters, name):
    x = layers.SeparableConv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_sep")(x)
    return layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)


def build_xception(image_dim: int = 128) -> keras.Model:
    inputs = keras.Input((image_dim, image_dim, 1), name="image")
    x = _conv_bn(inputs, 32, 3, strides=2, name="entry1")
    x = _conv_bn(x, 64, 3, name="entry2")
    for i, filters in enumerate((128, 256, 728)):
        residual = layers.Conv2D(filters, 1, strides=2, padding="same", use_bias=False,
                                 name=f"block{i}_shortcut")(x)
        residual = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"block{i}_shortcut_bn")(residual)
        if i > 0:
            x = layers.Activation("relu", name=f"block{i}_pre_act")(x)
        x = _sep_bn(x, filters, f"block{i}_a")
        x = layers.Activation("relu", name=f"block{i}_a_act")(x)
        x = _sep_bn(x, filters, f"block{i}_b")
        x = layers.MaxPooling2D(3, strides=2, padding="same", name=f"block{i}_pool")(x)
        x = layers.Add(name=f"block{i}_add")([x, residual])
    for i in range(8):
        residual = x
        for j in "abc":
            x = layers.Activation("relu", name=f"middle{i}_{j}_act")(x)
            x = _sep_bn(x, 728, f"middle{i}_{j}")
        x = layers.Add(name=f"middle{i}_add")([x, residual])
    residual = layers.Conv2D(1024, 1, strides=2, padding="same", use_bias=False, name="exit_shortcut")(x)
    residual = layers.BatchNormalization(momentum=BN_MOMENTUM, name="exit_shortcut_bn")(residual)
    x = layers.Activation("relu", name="exit_a_act")(x)
    x = _sep_bn(x, 728, "exit_a")
    x = layers.Activation("relu", name="exit_b_act")(x)
    x = _sep_bn(x, 1024, "exit_b")
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="exit_pool")(x)
    x = layers.Add(name="exit_add")([x, residual])
    x = layers.Activation("relu", name="exit_c_act")(_sep_bn(x, 1536, "exit_c"))
    x = layers.Activation("relu", name="exit_d_act")(_sep_bn(x, 2048, "exit_d"))
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    # float32 even under mixed precision: the landmarks and the loss stay exact.
    outputs = layers.Dense(NUM_OUTPUTS, name="landmarks", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="xception_landmarks")


def _inverted_residual(x, filters, expansion, strides, name):
    in_channels = x.shape[-1]
    y = x
    if expansion != 1:
        y = _conv_bn(y, in_channels * expansion, 1, name=f"{name}_expand", activation="relu6")
    y = layers.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False, name=f"{name}_dw")(y)
    y = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_dw_bn")(y)
    y = layers.Activation("relu6", name=f"{name}_dw_act")(y)
    y = _conv_bn(y, filters, 1, name=f"{name}_project", activation=None)
    if strides == 1 and in_channels == filters:
        y = layers.Add(name=f"{name}_add")([x, y])
    return y


# (filters, expansion, repeats, first stride) per stage, MobileNetV2-style.
MOBILE_STAGES = ((16, 1, 1, 1), (24, 4, 2, 2), (32, 4, 3, 2), (64, 4, 3, 2), (96, 4, 2, 1),
                 (128, 4, 2, 2))
HEATMAP_CHANNELS = 48


def heatmap_probabilities(logits):
    """Heatmap logits [B, H, W, K] -> (each map softmaxed, [B, K, H*W]; the cell centres
    [H*W, 2] as (x, y) in [-0.5, 0.5] crop coordinates, row-major)."""
    height, width, count = logits.shape[1], logits.shape[2], logits.shape[3]
    maps = ops.transpose(ops.reshape(logits, (-1, height * width, count)), (0, 2, 1))
    xs = (np.arange(width, dtype=np.float32) + 0.5) / width - 0.5
    ys = (np.arange(height, dtype=np.float32) + 0.5) / height - 0.5
    grid = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(height * width, 2)
    return ops.softmax(maps, axis=-1), grid


@keras.saving.register_keras_serializable(package="landmarks")
class SoftArgmax2D(layers.Layer):
    """Heatmap logits [B, H, W, K] -> expected (x, y) of each softmaxed map, flattened to
    [B, 2K] in [-0.5, 0.5] crop coordinates (integral regression, Sun et al. 2018)."""

    def call(self, logits):
        probs, grid = heatmap_probabilities(logits)
        coords = ops.matmul(probs, ops.cast(grid, probs.dtype))  # [B, K, 2]
        return ops.reshape(coords, (-1, 2 * logits.shape[3]))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 2 * input_shape[3])


# The facial contours of the 68-point scheme: (first, last, closed). Neighbour regression
# ties each point to the nearest points along its own contour.
CONTOURS = ((0, 16, False), (17, 21, False), (22, 26, False), (27, 35, False),
            (36, 41, True), (42, 47, True), (48, 59, True), (60, 67, True))
NEIGHBOURS = 4


def contour_neighbours(count: int = NEIGHBOURS) -> np.ndarray:
    """[68, count] indices: for each point, the ``count`` points nearest to it along its
    contour (round a closed one; ties to the lower index), as PIPNet's neighbours."""
    table = []
    for first, last, closed in CONTOURS:
        members = list(range(first, last + 1))
        for i, point in enumerate(members):
            def steps(j):
                gap = abs(i - j)
                return min(gap, len(members) - gap) if closed else gap
            others = sorted((j for j in range(len(members)) if j != i), key=lambda j: (steps(j), j))
            table.append([members[j] for j in others[:count]])
    return np.asarray(table, dtype=np.int64)


def neighbour_sources(neighbours: np.ndarray):
    """For OffsetSoftArgmax2D: (points [K, M], slots [K, M], weights [K, M]). Point k is the
    mean of its own estimate (point k, slot 0) and each neighbour j's estimate of it (point j,
    slot n + 1 where neighbours[j, n] == k); rows are padded to the longest with weight 0."""
    count = neighbours.shape[0]
    sources = [[(k, 0)] for k in range(count)]
    for j in range(count):
        for slot, k in enumerate(neighbours[j], start=1):
            sources[int(k)].append((j, slot))
    longest = max(len(row) for row in sources)
    points = np.zeros((count, longest), np.int64)
    slots = np.zeros((count, longest), np.int64)
    weights = np.zeros((count, longest), np.float32)
    for k, row in enumerate(sources):
        for m, (j, slot) in enumerate(row):
            points[k, m], slots[k, m], weights[k, m] = j, slot, 1.0 / len(row)
    return points, slots, weights


@keras.saving.register_keras_serializable(package="landmarks")
class OffsetSoftArgmax2D(layers.Layer):
    """[heatmap logits [B, H, W, K], offsets [B, H, W, K(1+N)2]] -> [B, 2K] landmarks.

    Each softmaxed map weighs, cell by cell, the cell's centre plus the offsets predicted
    there: the point's own offset and its N neighbours' offsets (in cells). Each point is then
    the mean of its own estimate and its neighbours' estimates of it, which keeps a contour's
    spacing consistent. Decoding is kept in float in int8 models (export_tflite.py).
    """

    def __init__(self, neighbours=None, **kwargs):
        super().__init__(**kwargs)
        table = contour_neighbours() if neighbours is None else np.asarray(neighbours)
        self.neighbours = table.astype(int).tolist()

    def call(self, inputs):
        logits, offsets = inputs
        height, width, count = logits.shape[1], logits.shape[2], logits.shape[3]
        slots = offsets.shape[3] // (2 * count)  # 1 + N
        probs, grid = heatmap_probabilities(logits)  # [B, K, HW]
        centres = ops.matmul(probs, ops.cast(grid, probs.dtype))  # [B, K, 2]
        values = ops.transpose(ops.reshape(offsets, (-1, height * width, count, 2 * slots)), (0, 2, 1, 3))
        expected = ops.reshape(ops.matmul(ops.expand_dims(probs, 2), values),
                               (-1, count * slots, 2))  # [B, K(1+N), 2] in cells
        # Gather each point's estimates (a cell centre and an offset each) and take their
        # weighted sum: gathers and elementwise ops, no matrix of small weights that a
        # dynamic-range or int8 conversion would round.
        points, slot, weights = neighbour_sources(np.asarray(self.neighbours))
        longest = points.shape[1]
        gathered = ops.concatenate([
            ops.take(centres, points.reshape(-1), axis=1),
            ops.take(expected, (points * slots + slot).reshape(-1), axis=1)], axis=1)  # [B, 2KM, 2]
        scale = np.concatenate([weights.reshape(-1), weights.reshape(-1) / width])[:, None]
        weighted = gathered * ops.cast(scale, gathered.dtype)
        summed = ops.sum(ops.reshape(weighted, (-1, 2, count, longest, 2)), axis=(1, 3))  # [B, K, 2]
        return ops.reshape(summed, (-1, 2 * count))

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], 2 * input_shape[0][3])

    def get_config(self):
        return {**super().get_config(), "neighbours": self.neighbours}


def init_neighbour_offsets(model: keras.Model, landmarks_norm: np.ndarray) -> None:
    """Start the ``offsets`` layer at zero kernels and, as biases, each neighbour's mean offset
    from its point in ``landmarks_norm`` [N, 136] (crop units, [-0.5, 0.5]): a new head's
    neighbour estimates begin at the mean shape instead of on the point itself."""
    layer = model.get_layer("offsets")
    table = np.asarray(model.get_layer("landmarks").neighbours)
    cells = model.get_layer("heatmaps").output.shape[2]
    points = np.asarray(landmarks_norm, np.float64).reshape(-1, table.shape[0], 2)
    own = np.zeros((table.shape[0], 1, 2))
    between = (points[:, table] - points[:, :, None]).mean(axis=0) * cells  # [K, N, 2] in cells
    bias = np.concatenate([own, between], axis=1).reshape(-1).astype(np.float32)
    kernel, _ = layer.get_weights()
    layer.set_weights([np.zeros_like(kernel), bias])


def heatmap_spread(logits):
    """Heatmap logits [B, H, W, K] -> the standard deviation [B, K] of each softmaxed map
    about its expected point, in crop-side units (the same grid as SoftArgmax2D)."""
    probs, grid = heatmap_probabilities(logits)
    mean = ops.matmul(probs, ops.cast(grid, probs.dtype))  # [B, K, 2]
    second = ops.matmul(probs, ops.cast(np.sum(grid ** 2, axis=-1, keepdims=True), probs.dtype))
    variance = ops.maximum(second[..., 0] - ops.sum(ops.square(mean), axis=-1), 0.0)
    return ops.sqrt(variance + 1e-12)


@keras.saving.register_keras_serializable(package="landmarks")
class HeatmapConfidence(layers.Layer):
    """Heatmap logits [B, H, W, K] -> a confidence [B, K] in [0, 1] per landmark.

    Each point's heatmap spread is divided by its typical spread on real training faces
    (``reference_spread``, measured at export); a ratio near 1 is a face point as the model
    usually sees it (confidence near 1), while a crop with no face, or half a face, spreads
    the maps out (ratio 1.7 and more: confidence near 0). The logistic's midpoint and width
    are in units of that ratio.
    """

    def __init__(self, reference_spread=None, midpoint: float = 1.35, width: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.reference_spread = [float(v) for v in (reference_spread if reference_spread is not None
                                                    else [0.2] * (NUM_OUTPUTS // 2))]
        self.midpoint, self.width = float(midpoint), float(width)

    def call(self, logits):
        ratio = heatmap_spread(logits) / ops.cast(np.array(self.reference_spread, np.float32), logits.dtype)
        return ops.sigmoid((self.midpoint - ratio) / self.width)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[3])

    def get_config(self):
        return {**super().get_config(), "reference_spread": self.reference_spread,
                "midpoint": self.midpoint, "width": self.width}


def with_confidence(model: keras.Model, reference_spread) -> keras.Model:
    """The `mobile` network with a second output: each landmark's confidence [B, 68]
    (HeatmapConfidence on the same heatmaps the soft-argmax reads). For export and inference."""
    heatmaps = model.get_layer("heatmaps").output
    confidence = HeatmapConfidence(reference_spread, name="confidence", dtype="float32")(heatmaps)
    return keras.Model(model.input, [model.output, confidence], name=f"{model.name}_with_confidence")


def _scaled(channels: int, width: float) -> int:
    """channels * width, rounded to a multiple of 8 (as MobileNet's width multiplier)."""
    return max(8, int(channels * width + 4) // 8 * 8)


def build_mobile(image_dim: int = 128, width: float = 1.0, heatmap_stride: int = 8,
                 name: str = "mobile_landmarks", neighbours: int = 0) -> keras.Model:
    """Inverted-residual backbone, a small feature pyramid down to ``heatmap_stride``, one
    heatmap per landmark and a soft-argmax: the coordinates come out of the network directly,
    but each is tied to a place in the image, which learns far faster than a Dense
    regressor on the few thousand faces of 300-W.

    ``width`` multiplies every stage's channels (and the pyramid's); ``heatmap_stride`` 8
    gives 16 x 16 heatmaps at 128 px, 4 gives 32 x 32 (the pyramid goes one level further).
    ``neighbours`` > 0 adds the ``offsets`` convolution and decodes with OffsetSoftArgmax2D
    (each point and its ``neighbours`` contour neighbours). The defaults are the ``mobile``
    network, layer for layer.
    """
    if heatmap_stride not in (4, 8):
        raise ValueError(f"heatmap_stride must be 4 or 8, got {heatmap_stride}")
    inputs = keras.Input((image_dim, image_dim, 1), name="image")
    x = _conv_bn(inputs, _scaled(16, width), 3, strides=2, name="stem", activation="relu6")
    features = {}
    stride = 2
    for s, (filters, expansion, repeats, first_stride) in enumerate(MOBILE_STAGES):
        for r in range(repeats):
            x = _inverted_residual(x, _scaled(filters, width), expansion,
                                   first_stride if r == 0 else 1, f"stage{s}_{r}")
        stride *= first_stride
        features[stride] = x
    # Top-down pyramid: stride 32 -> 16 -> 8 (-> 4).
    channels = _scaled(HEATMAP_CHANNELS, width)
    top = _conv_bn(features[32], channels, 1, name="fpn32", activation=None)
    for level in (16, 8, 4)[:(3 if heatmap_stride == 4 else 2)]:
        lateral = _conv_bn(features[level], channels, 1, name=f"fpn{level}", activation=None)
        top = layers.Add(name=f"fpn{level}_add")([
            lateral, layers.UpSampling2D(2, interpolation="bilinear", name=f"fpn{level}_up")(top)])
    x = layers.Activation("relu", name="fpn_act")(top)
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="head_dw")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name="head_dw_bn")(x)
    x = layers.Activation("relu", name="head_dw_act")(x)
    heatmaps = layers.Conv2D(NUM_OUTPUTS // 2, 1, name="heatmaps", dtype="float32")(x)
    if not neighbours:
        outputs = SoftArgmax2D(name="landmarks", dtype="float32")(heatmaps)
        return keras.Model(inputs, outputs, name=name)
    table = contour_neighbours(neighbours)
    offsets = layers.Conv2D(NUM_OUTPUTS * (1 + neighbours), 1, kernel_initializer="zeros",
                            name="offsets", dtype="float32")(x)
    outputs = OffsetSoftArgmax2D(table, name="landmarks", dtype="float32")([heatmaps, offsets])
    return keras.Model(inputs, outputs, name=name)


def build_mobile_s4(image_dim: int = 128) -> keras.Model:
    """``mobile`` with 32 x 32 heatmaps (stride 4) at 128 px."""
    return build_mobile(image_dim, heatmap_stride=4, name="mobile_s4_landmarks")


def build_mobile_wide(image_dim: int = 128) -> keras.Model:
    """``mobile`` with 1.5 x the channels, 16 x 16 heatmaps."""
    return build_mobile(image_dim, width=1.5, name="mobile_wide_landmarks")


def build_mobile_wide_s4(image_dim: int = 128) -> keras.Model:
    """``mobile-wide`` with 32 x 32 heatmaps (stride 4)."""
    return build_mobile(image_dim, width=1.5, heatmap_stride=4, name="mobile_wide_s4_landmarks")


def build_mobile_wide_nrm(image_dim: int = 128) -> keras.Model:
    """``mobile-wide`` with per-cell offsets and neighbour regression (OffsetSoftArgmax2D)."""
    return build_mobile(image_dim, width=1.5, name="mobile_wide_nrm_landmarks", neighbours=NEIGHBOURS)


def build_part_network(dim: int = 48, points: int = 6, name: str = "eyes") -> keras.Model:
    """A part model (parts.py): one grey crop of an eye or the mouth -> its ``points`` points
    [2 * points] in [-0.5, 0.5] crop coordinates, through heatmaps at stride 4 and a
    soft-argmax. Both eyes at 48 px: about 56 MFLOPs a face; the mouth at 64 px: about 50."""
    inputs = keras.Input((dim, dim, 1), name=f"{name}_crop")
    x = inputs
    for i, (filters, strides) in enumerate(((16, 2), (32, 1), (48, 2), (64, 1), (64, 1))):
        x = _conv_bn(x, filters, 3, strides=strides, name=f"{name}{i}")
    heatmaps = layers.Conv2D(points, 1, name="heatmaps", dtype="float32")(x)
    outputs = SoftArgmax2D(name=f"{name}_points", dtype="float32")(heatmaps)
    return keras.Model(inputs, outputs, name=f"{name}_landmarks")


ARCHITECTURES = {"xception": build_xception, "mobile": build_mobile, "mobile-s4": build_mobile_s4,
                 "mobile-wide": build_mobile_wide, "mobile-wide-nrm": build_mobile_wide_nrm,
                 "mobile-wide-s4": build_mobile_wide_s4}

# The layers each variant adds to ``mobile-wide``: a mobile-wide checkpoint starts every other
# layer of it (train.py --init-weights), and these start from start_added_layers().
ADDED_TO_MOBILE_WIDE = {"mobile-wide-nrm": ("offsets",), "mobile-wide-s4": ("fpn4_conv", "fpn4_bn")}


def start_added_layers(model: keras.Model, arch: str, landmarks_norm: np.ndarray) -> str:
    """Start the layers ``arch`` adds to ``mobile-wide`` so that the network begins close to the
    checkpoint it grew from; returns what was done, for the log. ``mobile-wide-nrm``: the
    neighbour offsets at their mean over ``landmarks_norm``; ``mobile-wide-s4``: the stride-4
    lateral's batch norm at gamma 0, so the new level starts as the stride-8 features upsampled."""
    if arch == "mobile-wide-nrm":
        init_neighbour_offsets(model, landmarks_norm)
        return f"neighbour offsets start at their mean over {len(landmarks_norm)} training faces"
    if arch == "mobile-wide-s4":
        layer = model.get_layer("fpn4_bn")
        layer.set_weights([np.zeros_like(w) if i == 0 else w for i, w in enumerate(layer.get_weights())])
        return "the stride-4 level starts as the stride-8 features upsampled (its lateral at zero)"
    raise ValueError(f"{arch} adds no layers to mobile-wide")


def build_network(arch: str = "xception", image_dim: int = 128) -> keras.Model:
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {sorted(ARCHITECTURES)}")
    if image_dim % 32:
        raise ValueError(f"image_dim must be a multiple of 32, got {image_dim}")
    return ARCHITECTURES[arch](image_dim)


def count_flops(model: keras.Model) -> int:
    """Floating-point operations (multiply + add = 2) of one forward pass at batch 1."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    spec = tf.TensorSpec([1, *model.input_shape[1:]], tf.float32)
    concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    graph = convert_variables_to_constants_v2(concrete).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return int(tf.compat.v1.profiler.profile(graph=graph, options=options).total_float_ops)


if __name__ == "__main__":  # python model.py [image_dim]: the size of each architecture
    import sys

    dim = int(sys.argv[1]) if len(sys.argv) > 1 else 128
    for name in ARCHITECTURES:
        network = build_network(name, dim)
        print(f"{name}: {network.count_params():,} parameters, "
              f"{count_flops(network) / 1e6:.1f} MFLOPs per {dim}x{dim} face")
