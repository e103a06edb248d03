"""docs/data.md#actions action encoding against hand-computed values."""

import numpy as np
import pytest

from ochre.actions import encode_live, encode_window_actions, kept_ticks, mouse_counts_to_degrees


def test_kept_ticks_8fps_is_floor_of_2_5():
    assert kept_ticks(21, 8).tolist() == [0, 2, 5, 7, 10, 12, 15, 17, 20]
    assert kept_ticks(5, 20).tolist() == [0, 1, 2, 3, 4]
    assert kept_ticks(10, 4).tolist() == [0, 5]
    with pytest.raises(ValueError):
        kept_ticks(10, 40)


def test_window_actions_sum_clip_scale_and_average():
    # ticks 0, 2, 5: windows are ticks {0,1} and {2,3,4}.
    camera = np.array([[1.0, 2.0], [3.0, 4.0],            # pitch sum 4, yaw sum 6
                       [10.0, -9.0], [10.0, -9.0], [0.0, 0.0]])   # pitch sum 20 -> clip 15; yaw -18 -> -15
    right_minus_left = np.array([1, 1, -1, 0, 0], float)
    fwd_minus_back = np.array([1, 0, 1, 1, -1], float)
    got = encode_window_actions(camera, right_minus_left, fwd_minus_back, np.array([0, 2, 5]))
    want = np.array([[6 / 15, 4 / 15, 1.0, 0.5],
                     [-1.0, 1.0, -1 / 3, 1 / 3]], np.float32)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-7)
    assert got.dtype == np.float32


def test_window_actions_reject_bad_ticks():
    with pytest.raises(ValueError):
        encode_window_actions(np.zeros((3, 2)), np.zeros(3), np.zeros(3), np.array([0, 2, 5]))
    assert encode_window_actions(np.zeros((3, 2)), np.zeros(3), np.zeros(3), np.array([0])).shape == (0, 4)


def test_live_encoding_matches_recorded_encoding():
    a = encode_live(7.5, -30.0, {"w", "a"})
    np.testing.assert_allclose(a, [0.5, -1.0, -1.0, 1.0])
    assert encode_live(0.0, 0.0, set()).tolist() == [0, 0, 0, 0]


def test_live_mouse_counts_to_degrees_by_hand():
    # 0.15 degrees per count (360 / 2400): 40 counts right = 6 degrees of yaw, 20 up = -3 of pitch.
    yaw, pitch = mouse_counts_to_degrees(40, -20)
    assert (float(yaw), float(pitch)) == pytest.approx((6.0, -3.0), abs=1e-12)
    # One model step: 100 counts right (15 degrees, the clip) and 10 down (1.5 degrees) with W + D held.
    a = encode_live(*mouse_counts_to_degrees(100, 10), {"w", "d"})
    np.testing.assert_allclose(a, [1.0, 0.1, 1.0, 1.0], atol=1e-7)
    # 150 counts is 22.5 degrees: saturates at 1; counts arrays convert elementwise.
    np.testing.assert_allclose(encode_live(*mouse_counts_to_degrees(-150, 0), set()), [-1, 0, 0, 0])
    np.testing.assert_allclose(mouse_counts_to_degrees([1, 2400], [0, 0])[0], [0.15, 360.0])
