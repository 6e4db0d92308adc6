"""The architectures keep the sizes the project promises (python model.py prints them)."""

import pytest

import model


def test_mobile_fits_a_raspberry_pi_budget():
    network = model.build_network("mobile", 128)
    assert network.count_params() < 1_000_000
    assert model.count_flops(network) < 100_000_000
    assert network.output_shape == (None, 136)


def test_xception_is_the_seeds_network():
    network = model.build_network("xception", 128)
    assert network.output_shape == (None, 136)
    assert network.get_layer("landmarks").units == 136
    assert sum(1 for layer in network.layers if layer.name.endswith("_add") and layer.name.startswith("middle")) == 8


def test_unknown_architecture_and_bad_size_are_refused():
    with pytest.raises(ValueError, match="unknown architecture 'resnet'"):
        model.build_network("resnet")
    with pytest.raises(ValueError, match="multiple of 32"):
        model.build_network("mobile", 100)
