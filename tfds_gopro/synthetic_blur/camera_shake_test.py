"""Tests of the camera-shake simulator (on the tiny photos of dummy_data/)."""

import types

from etils import epath
import numpy as np

from tfds_gopro.synthetic_blur import camera_shake

DUMMY = epath.Path(__file__).parent / 'dummy_data'


def test_no_motion_no_noise_gives_the_sharp_image():
  cfg = types.SimpleNamespace(
    crop_height=32,
    crop_width=48,
    min_frames=7,
    max_frames=13,
    min_blur=0.0,
    max_blur=0.0,
    max_rotation=0.0,
    shot_noise=0.0,
    read_noise=0.0,
  )
  photo = camera_shake.load_photo((DUMMY / 'photo0.png').read_bytes())
  for i in range(4):
    blur, sharp = camera_shake.simulate_pair(
      photo, cfg, np.random.default_rng(i)
    )
    np.testing.assert_array_equal(blur, sharp)


def test_camera_path_length_and_middle_frame():
  rng = np.random.default_rng(0)
  for num_frames in range(7, 14):
    shifts, angles = camera_shake.camera_path(rng, num_frames, 10.0, 0.01)
    mid = num_frames // 2
    assert np.all(shifts[mid] == 0) and angles[mid] == 0
    chord = np.linalg.norm(np.diff(shifts, axis=0), axis=1).sum()
    assert 5.0 < chord <= 10.0 + 1e-9  # Chords of a 10-pixel arc.
