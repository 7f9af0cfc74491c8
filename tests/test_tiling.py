"""Tiled inference must equal full-image inference when the overlap covers the receptive field."""

import itertools

import numpy as np
import pytest

from ecbdeploy.errors import EcbDeployError
from ecbdeploy.runners import TorchRunner
from ecbdeploy.tiling import receptive_radius, run_tiled, spans, super_resolve


@pytest.fixture
def make_runner(make_ecbsr):
    def make(colors=1, scale=2):
        model = make_ecbsr(blocks=2, channels=8, colors=colors, scale=scale)
        return TorchRunner("mem.pth", model, model.arch, "pytorch-multibranch")

    return make


def _image(c, h, w, pixel_range=255.0, seed=1):
    return (np.random.default_rng(seed).random((c, h, w)) * pixel_range).astype(np.float32)


@pytest.mark.parametrize("length,tile,overlap", [(100, 40, 6), (41, 40, 6), (40, 40, 6), (13, 40, 6),
                                                 (257, 64, 10), (65, 33, 16)])
def test_spans_partition_the_axis_and_keep_away_from_cuts(length, tile, overlap):
    result = spans(length, tile, overlap)
    assert result[0].keep_start == 0 and result[-1].keep_end == length
    for a, b in itertools.pairwise(result):
        assert a.keep_end == b.keep_start
    for s in result:
        assert s.size == min(tile, length)
        assert 0 <= s.start and s.start + s.size <= length
        assert s.start <= s.keep_start < s.keep_end <= s.start + s.size
        if s.start > 0:
            assert s.keep_start - s.start >= overlap
        if s.start + s.size < length:
            assert s.start + s.size - s.keep_end >= overlap


@pytest.mark.parametrize("colors,scale", [(1, 2), (3, 3), (1, 4)])
def test_tiled_output_equals_full_image_output(make_runner, colors, scale):
    runner = make_runner(colors=colors, scale=scale)
    x = _image(colors, 70, 91)
    full = runner(x[None])[0]
    tiled = run_tiled(runner, x, scale, (32, 40), receptive_radius(runner.arch))
    assert tiled.shape == full.shape
    np.testing.assert_allclose(tiled, full, rtol=0, atol=1e-4 * 255.0)


def test_too_small_overlap_shows_seams(make_runner):
    """The equality above is not trivially true: cutting closer than the receptive field differs."""
    runner = make_runner()
    x = _image(1, 70, 91)
    full = runner(x[None])[0]
    tiled = run_tiled(runner, x, 2, (32, 40), overlap=1)
    assert np.abs(tiled - full).max() > 1e-2


def test_static_shape_model_gets_exact_tiles_and_small_images_are_padded(make_runner):
    runner = make_runner()
    seen = []

    def static_model(batch):
        seen.append(batch.shape[2:])
        return runner(batch)

    static_model.static_hw, static_model.arch = (24, 24), runner.arch
    big = _image(1, 50, 61)
    np.testing.assert_allclose(super_resolve(static_model, big, 2), runner(big[None])[0], atol=1e-4 * 255.0)
    small = _image(1, 10, 17)
    out = super_resolve(static_model, small, 2)
    assert out.shape == (1, 20, 34)
    assert set(seen) == {(24, 24)}
    # Replication padding only changes pixels near the padded (right/bottom) border.
    inner = runner(small[None])[0][:, :20 - 2 * receptive_radius(runner.arch), :34 - 2 * receptive_radius(runner.arch)]
    np.testing.assert_allclose(out[:, :inner.shape[1], :inner.shape[2]], inner, atol=1e-4 * 255.0)


def test_tile_option_conflicting_with_static_shape_is_refused(make_runner):
    runner = make_runner()

    def static_model(batch):
        return runner(batch)

    static_model.static_hw, static_model.arch = (24, 24), runner.arch
    with pytest.raises(EcbDeployError, match="only accepts 24x24"):
        super_resolve(static_model, _image(1, 30, 30), 2, tile=(32, 32))


def test_tile_smaller_than_twice_the_overlap_is_refused():
    with pytest.raises(EcbDeployError, match="too small"):
        spans(100, 10, 6)
