"""Network architectures: ``build_network(arch, image_dim)`` -> keras.Model.

- ``xception``: the seed's Xception-like regressor (entry convs, separable residual blocks
  of 128/256/728 channels, 8 middle blocks, exit block, Dense(136)). About 21 M parameters.
- ``mobile``: a MobileNetV2-style network for the Raspberry Pi (inverted residual blocks,
  multi-scale head as in PFLD), under 1 M parameters and 100 MFLOPs at 128 x 128.

Both take a grey ``image_dim x image_dim x 1`` image in [-1, 1] and return 136 numbers:
the 68 (x, y) landmarks in [-0.5, 0.5] crop coordinates.
"""

from __future__ import annotations

import keras
from keras import layers

NUM_OUTPUTS = 136
# Keras' default BatchNormalization momentum (0.99) is kept everywhere; 0.999 (Keras'
# MobileNet builders) lags too far behind on short schedules and wrecks validation NME.
BN_MOMENTUM = 0.99


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
    outputs = layers.Dense(NUM_OUTPUTS, name="landmarks")(x)
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
MOBILE_STAGES = ((16, 1, 1, 1), (24, 4, 2, 2), (32, 4, 3, 2), (64, 4, 3, 2), (96, 4, 2, 1))


def build_mobile(image_dim: int = 128) -> keras.Model:
    inputs = keras.Input((image_dim, image_dim, 1), name="image")
    x = _conv_bn(inputs, 16, 3, strides=2, name="stem", activation="relu6")
    for s, (filters, expansion, repeats, stride) in enumerate(MOBILE_STAGES):
        for r in range(repeats):
            x = _inverted_residual(x, filters, expansion, stride if r == 0 else 1, f"stage{s}_{r}")
    scale8 = x  # image_dim / 16
    x = _inverted_residual(x, 128, 4, 2, "stage5_0")
    scale16 = _inverted_residual(x, 128, 4, 1, "stage5_1")  # image_dim / 32
    # Multi-scale head (as PFLD): pooled features of two scales plus a small spatial map,
    # so the regressor keeps where things are, not only what they are.
    spatial = _conv_bn(scale16, 32, 1, name="head_spatial", activation="relu6")
    features = layers.Concatenate(name="head_concat")([
        layers.GlobalAveragePooling2D(name="head_pool8")(scale8),
        layers.GlobalAveragePooling2D(name="head_pool16")(scale16),
        layers.Flatten(name="head_flatten")(spatial),
    ])
    outputs = layers.Dense(NUM_OUTPUTS, name="landmarks")(features)
    return keras.Model(inputs, outputs, name="mobile_landmarks")


ARCHITECTURES = {"xception": build_xception, "mobile": build_mobile}


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
