"""The architectures keep the sizes the project promises (python model.py prints them)."""

import numpy as np
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


# ---------------------------------------------------------------------------------------
# mobile-wide-nrm: per-cell offsets and neighbour regression
# ---------------------------------------------------------------------------------------


def test_neighbours_are_the_nearest_points_along_each_contour():
    table = model.contour_neighbours(4)
    assert table.shape == (68, 4)
    assert table[0].tolist() == [1, 2, 3, 4]  # the jaw is open: its end looks one way
    assert table[8].tolist() == [7, 9, 6, 10]
    assert table[16].tolist() == [15, 14, 13, 12]
    assert table[36].tolist() == [37, 41, 38, 40]  # an eye is closed: round the corner
    assert table[48].tolist() == [49, 59, 50, 58]
    assert table[60].tolist() == [61, 67, 62, 66]
    assert table[27].tolist() == [28, 29, 30, 31]
    for point, row in enumerate(table):  # never itself, never across contours
        first, last, _ = next(c for c in model.CONTOURS if c[0] <= point <= c[1])
        assert point not in row and all(first <= j <= last for j in row)


def test_each_point_is_the_mean_of_its_own_and_its_neighbours_estimates():
    points, slots, weights = model.neighbour_sources(model.contour_neighbours(4))
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-6)
    assert (points[:, 0] == np.arange(68)).all() and (slots[:, 0] == 0).all()
    # Point 0 is among the 4 nearest of point 1 ([0, 2, 3, 4]: slot 1) and of point 2
    # ([1, 3, 0, 4]: slot 3); point 3's nearest are 2, 4, 1, 5.
    used = weights[0] > 0
    assert sorted(zip(points[0][used].tolist(), slots[0][used].tolist())) == [(0, 0), (1, 1), (2, 3)]
    assert weights[0][used] == pytest.approx([1 / 3] * 3)


def _peaked_inputs(truth, cells=16, neighbours=4):
    """Heatmap logits peaked at the cell holding each true point, and offsets there that
    point exactly at the point itself and at each neighbour (in cells)."""
    table = model.contour_neighbours(neighbours)
    truth_cells = (truth + 0.5) * cells  # [68, 2] in cell units, x then y
    cell = np.clip(np.floor(truth_cells), 0, cells - 1).astype(int)
    logits = np.zeros((1, cells, cells, 68), np.float32)
    offsets = np.zeros((1, cells, cells, 68, 1 + neighbours, 2), np.float32)
    for k in range(68):
        col, row = cell[k]
        logits[0, row, col, k] = 60.0
        centre = cell[k] + 0.5
        offsets[0, row, col, k, 0] = truth_cells[k] - centre
        offsets[0, row, col, k, 1:] = truth_cells[table[k]] - centre
    return logits, offsets.reshape(1, cells, cells, -1), table, cell


def test_offset_decoding_is_exact_when_every_estimate_agrees():
    truth = np.random.default_rng(3).uniform(-0.45, 0.45, (68, 2)).astype(np.float32)
    logits, offsets, table, _ = _peaked_inputs(truth)
    layer = model.OffsetSoftArgmax2D(table)
    got = np.asarray(layer([logits, offsets])).reshape(68, 2)
    np.testing.assert_allclose(got, truth, atol=1e-5)


def test_a_wrong_neighbour_estimate_moves_its_point_by_its_share():
    truth = np.random.default_rng(4).uniform(-0.45, 0.45, (68, 2)).astype(np.float32)
    logits, offsets, table, cell = _peaked_inputs(truth)
    shaped = offsets.reshape(1, 16, 16, 68, 5, 2)
    # Point 2's estimate of its second neighbour (point 3, slot 2) is one cell too far right.
    assert table[2][1] == 3
    col, row = cell[2]
    shaped[0, row, col, 2, 2, 0] += 1.0
    got = np.asarray(model.OffsetSoftArgmax2D(table)([logits, shaped.reshape(1, 16, 16, -1)])).reshape(68, 2)
    _, _, weights = model.neighbour_sources(table)
    sources = int((weights[3] > 0).sum())
    expected = truth.copy()
    expected[3, 0] += 1.0 / 16 / sources  # one cell is 1/16 of the crop, shared by its estimates
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_mobile_wide_nrm_keeps_the_budget_and_round_trips():
    network = model.build_network("mobile-wide-nrm", 128)
    assert network.output_shape == (None, 136)
    assert network.get_layer("offsets").filters == 136 * 5
    assert model.count_flops(network) < 260_000_000
    config = network.get_layer("landmarks").get_config()
    assert model.OffsetSoftArgmax2D.from_config(config).neighbours == config["neighbours"]


def test_mobile_wide_s4_has_32_by_32_heatmaps_and_the_wide_layers():
    network = model.build_network("mobile-wide-s4", 128)
    wide = model.build_network("mobile-wide", 128)
    assert network.get_layer("heatmaps").output.shape[1:] == (32, 32, 68)
    added = {layer.name for layer in network.layers if layer.weights} - {layer.name for layer in wide.layers}
    assert added == set(model.ADDED_TO_MOBILE_WIDE["mobile-wide-s4"])
