"""Built-in calibration data: whole photos, no seams or empty gaps, each photo used in turn; and
the pixel-range cover that makes the int8 input step equal the pixel step."""

from __future__ import annotations

import numpy as np

from ecbdeploy import calibration
from ecbdeploy.arch import ArchSpec
from ecbdeploy.images import TRAIN_PHOTOS

Y_X2 = ArchSpec(blocks=1, channels=8, colors=1, scale=2, act="prelu", with_idt=False, pixel_range=255.0)


def test_samples_larger_than_every_photo_hold_no_empty_gaps():
    # 600x800 LR needs every training photo (all smaller) to be mirrored out.
    calib = calibration.builtin(Y_X2, (600, 800), 3)
    assert calib.shape == (3, 600, 800, 1) and calib.dtype == np.float32
    assert calib.min() >= 16.0 and calib.max() <= 235.5  # BT.601 Y everywhere: no zero-filled gaps
    # mirrored, not tiled: crossing the photo's edge continues it without a jump
    assert np.abs(np.diff(calib, axis=2)).max() < 200


def test_each_photo_is_used_in_turn():
    n = len(TRAIN_PHOTOS)
    calib = calibration.builtin(Y_X2, (40, 40), n + 1)
    means = calib.reshape(n + 1, -1).mean(1)
    assert len(np.unique(np.round(means[:n], 3))) == n  # n different photos first...
    again = calibration.builtin(Y_X2, (40, 40), n + 1)
    assert np.array_equal(calib, again)  # ...deterministically


def test_cover_pixel_range_raises_one_value_and_copies():
    calib = calibration.builtin(Y_X2, (32, 48), 2)
    kept = calib.copy()
    covered = calibration.cover_pixel_range(calib, 255.0)
    assert np.array_equal(calib, kept)  # the input is not modified
    assert covered.max() == 255.0 and covered.min() == calib.min()
    assert int((covered != calib).sum()) == 1
    assert np.array_equal(calibration.cover_pixel_range(covered, 255.0), covered)  # already covered
    rgb01 = calibration.cover_pixel_range(np.full((1, 4, 4, 3), 0.5, np.float32), 1.0)
    assert rgb01.max() == 1.0
