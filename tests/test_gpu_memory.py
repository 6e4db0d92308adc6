"""tools/gpu_memory.py: the memory estimate behind the README's batch sizes, checked against
hand-counted layer sizes and hand-worked arithmetic."""

import keras
import pytest

from tools import gpu_memory


def test_activation_elements_sum_every_layer_output_for_one_image():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)  # 8*8*4 = 256
    x = keras.layers.ReLU()(x)  # 256
    x = keras.layers.Flatten()(x)  # 256
    outputs = keras.layers.Dense(10)(x)  # 10
    model = keras.Model(inputs, outputs)
    assert gpu_memory.activation_elements(model) == 64 + 256 + 256 + 256 + 10


def test_estimate_counts_gradients_and_adam_and_halves_activations_in_float16():
    full = gpu_memory.estimate("mobile", 128, mixed_precision=False, ema=False)
    half = gpu_memory.estimate("mobile", 128, mixed_precision=True, ema=True)
    assert full["bytes_per_image"] == 2 * 4 * full["activation_elements_per_image"]
    assert half["bytes_per_image"] == full["bytes_per_image"] / 2
    assert full["fixed_bytes"] == 16 * full["parameters"]
    assert half["fixed_bytes"] == 20 * full["parameters"]


def test_largest_batch_leaves_the_reserve_and_suggests_a_power_of_two_with_a_margin():
    row = {"bytes_per_image": 0.1e9, "fixed_bytes": 0.5e9}
    # 6 GB - 1 reserved - 0.5 fixed = 4.5 GB: 45 images; less a quarter of the card: 30 -> 16
    assert gpu_memory.largest_batch(row, 6, 1) == {"fits": 45, "suggested": 16}
    assert gpu_memory.largest_batch(row, 1.4, 1) == {"fits": 0, "suggested": 0}


@pytest.mark.parametrize("argv", [["--image-dim", "100"], ["--gpu-gb", "1"], ["--arch", "resnet"]])
def test_bad_flags_exit_2_naming_the_flag(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        gpu_memory.main(argv)
    assert exit_info.value.code == 2
    assert argv[0] in capsys.readouterr().err
