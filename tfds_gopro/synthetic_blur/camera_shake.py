"""The camera-shake simulator behind the `synthetic_blur` dataset.

GoPro (Nah et al., 2017) made its blurry images by averaging 7 to 13
consecutive frames of a 240 fps video taken with a shaking hand-held camera,
in linear light, and took the middle frame as the sharp target.
`simulate_pair` replays that recipe on a still photograph: the blurry image is
the average of N frames (N uniform in 7..13) of a crop seen along a smooth
random camera path (`camera_path`: sub-pixel translations along a cubic Bezier
curve, plus a little rotation), averaged in linear light (sRGB -> linear ->
mean -> sRGB) with a little shot and read noise; the sharp image is the middle
frame, which is the unshifted crop itself. The result depends only on the
random generator passed in.

Also here: reading photos (files, scikit-image's bundled ones) as uint8 RGB,
and `procedural_photo`, a random test image.
"""

from __future__ import annotations

import io
from typing import Protocol

import numpy as np
from PIL import Image
from PIL import ImageOps
from scipy import ndimage


class ShakeConfig(Protocol):
  """What `simulate_pair` reads (the fields of `SyntheticBlurConfig`)."""

  crop_height: int
  crop_width: int
  min_frames: int
  max_frames: int
  min_blur: float
  max_blur: float
  max_rotation: float
  shot_noise: float
  read_noise: float


def load_skimage_photo(name: str) -> np.ndarray:
  """Returns a scikit-image bundled photograph as uint8 RGB."""
  from skimage import data  # pylint: disable=g-import-not-at-top

  photo = (
    data.stereo_motorcycle()[0]
    if name == 'motorcycle'
    else getattr(data, name)()
  )
  return as_rgb8(photo)


def load_photo(encoded: bytes) -> np.ndarray:
  """Decodes an image file (EXIF orientation applied) to uint8 RGB."""
  with Image.open(io.BytesIO(encoded)) as image:
    image = ImageOps.exif_transpose(image)
    if image.mode.startswith('I'):  # 16-bit gray.
      array = np.asarray(image, dtype=np.float64)
      return as_rgb8(np.clip(np.round(array / 257), 0, 255))
    return np.asarray(image.convert('RGB'), dtype=np.uint8)


def as_rgb8(photo: np.ndarray) -> np.ndarray:
  """Gray or RGB(A) array in [0, 255] -> (H, W, 3) uint8."""
  photo = np.asarray(photo)
  if photo.ndim == 2:
    photo = np.repeat(photo[..., None], 3, axis=-1)
  return np.ascontiguousarray(photo[..., :3]).astype(np.uint8)


def fit_photo(photo: np.ndarray, max_side: int) -> np.ndarray:
  """Downscales `photo` (Lanczos) so its longer side is at most `max_side`."""
  h, w = photo.shape[:2]
  if not max_side or max(h, w) <= max_side:
    return photo
  scale = max_side / max(h, w)
  size = (max(1, round(w * scale)), max(1, round(h * scale)))
  resized = Image.fromarray(photo).resize(size, Image.Resampling.LANCZOS)
  return np.asarray(resized, dtype=np.uint8)


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
  """sRGB values in [0, 1] -> linear light (IEC 61966-2-1)."""
  return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
  """Linear light in [0, 1] -> sRGB values (IEC 61966-2-1)."""
  x = np.clip(x, 0.0, 1.0)
  return np.where(x <= 0.0031308, x * 12.92, 1.055 * x ** (1 / 2.4) - 0.055)


def camera_path(
  rng: np.random.Generator, num_frames: int, length: float, roll: float
) -> tuple[np.ndarray, np.ndarray]:
  """Smooth random camera path, relative to its middle frame.

  Args:
    rng: Random generator.
    num_frames: Number of frames N.
    length: Arc length of the translation path, in pixels.
    roll: Total rotation over the path, in radians.

  Returns:
    (N, 2) (dy, dx) shifts and (N,) angles; both are 0 at frame N // 2.
  """
  # Cubic Bezier whose control points follow a random walk with inertia.
  angle = rng.uniform(0, 2 * np.pi)
  points = [np.zeros(2)]
  for _ in range(3):
    angle += rng.normal(0, 0.7)
    step = rng.uniform(0.5, 1.5)
    points.append(points[-1] + step * np.array([np.sin(angle), np.cos(angle)]))
  control = np.stack(points)

  def bezier(t):
    t = t[:, None]
    return (
      (1 - t) ** 3 * control[0]
      + 3 * (1 - t) ** 2 * t * control[1]
      + 3 * (1 - t) * t**2 * control[2]
      + t**3 * control[3]
    )

  dense = bezier(np.linspace(0, 1, 257))
  arc = np.linalg.norm(np.diff(dense, axis=0), axis=1).sum()
  t = np.linspace(0, 1, num_frames)
  mid = num_frames // 2
  shifts = bezier(t) * (length / arc if arc > 0 else 0.0)
  angles = roll * (t - t[mid])
  return shifts - shifts[mid], angles


def simulate_pair(
  photo: np.ndarray, cfg: ShakeConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
  """Cuts one (blur, sharp) uint8 pair of the config's crop size from `photo`.

  Args:
    photo: (H, W, 3) uint8 sRGB photo, at least as large as the crop.
    cfg: The sizes and ranges (a `SyntheticBlurConfig`).
    rng: The generator of this example; the result depends only on it.

  Returns:
    (blur, sharp), both (crop_height, crop_width, 3) uint8.
  """
  h, w = cfg.crop_height, cfg.crop_width
  num_frames = int(rng.integers(cfg.min_frames, cfg.max_frames + 1))
  length = rng.uniform(cfg.min_blur, cfg.max_blur)
  roll = np.deg2rad(rng.uniform(-cfg.max_rotation, cfg.max_rotation))
  shifts, angles = camera_path(rng, num_frames, length, roll)

  # Crop position: keep the path inside the photo when it fits, and prefer
  # textured crops (of 8 candidates, the first with some contrast).
  reach = length + abs(roll) * 0.5 * np.hypot(h, w) + 2
  margin_y = int(min(np.ceil(reach), (photo.shape[0] - h) // 2))
  margin_x = int(min(np.ceil(reach), (photo.shape[1] - w) // 2))
  best, best_std = None, -1.0
  for _ in range(8):
    y0 = int(rng.integers(margin_y, photo.shape[0] - h - margin_y + 1))
    x0 = int(rng.integers(margin_x, photo.shape[1] - w - margin_x + 1))
    std = float(photo[y0 : y0 + h, x0 : x0 + w].mean(axis=-1).std()) / 255
    if std > best_std:
      best, best_std = (y0, x0), std
    if std >= 0.05:
      break
  y0, x0 = best
  sharp = photo[y0 : y0 + h, x0 : x0 + w].copy()

  # Average the frames in linear light. Only the region the path can reach
  # is converted; sampling outside the photo mirrors it.
  ry0, rx0 = max(y0 - margin_y, 0), max(x0 - margin_x, 0)
  region = photo[ry0 : y0 + h + margin_y, rx0 : x0 + w + margin_x]
  linear = srgb_to_linear(region.astype(np.float64) / 255)
  yy, xx = np.meshgrid(
    np.arange(h, dtype=np.float64),
    np.arange(w, dtype=np.float64),
    indexing='ij',
  )
  cy, cx = (h - 1) / 2, (w - 1) / 2
  total = np.zeros((h, w, 3))
  for (dy, dx), theta in zip(shifts, angles):
    cos, sin = np.cos(theta), np.sin(theta)
    sy = cos * (yy - cy) - sin * (xx - cx) + cy + dy + (y0 - ry0)
    sx = sin * (yy - cy) + cos * (xx - cx) + cx + dx + (x0 - rx0)
    for c in range(3):
      total[..., c] += ndimage.map_coordinates(
        linear[..., c], [sy, sx], order=1, mode='mirror'
      )
  mean = total / num_frames

  # Sensor noise: shot noise in linear light, read noise after the sRGB curve.
  k = rng.uniform(0.0, cfg.shot_noise)
  if k > 0:
    mean = mean + k * np.sqrt(np.maximum(mean, 0)) * rng.standard_normal(
      mean.shape
    )
  srgb = linear_to_srgb(mean) * 255
  if cfg.read_noise > 0:
    srgb = srgb + cfg.read_noise * rng.standard_normal(srgb.shape)
  blur = np.clip(np.round(srgb), 0, 255).astype(np.uint8)
  return blur, sharp


def procedural_photo(
  rng: np.random.Generator, height: int, width: int
) -> np.ndarray:
  """A random uint8 RGB 'photo' (shapes, edges, texture) for tests and demos."""
  yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
  base = rng.uniform(0.2, 0.8, 3)
  grad = rng.uniform(-0.3, 0.3, (2, 3))
  image = base + yy[..., None] * grad[0] + xx[..., None] * grad[1]
  for _ in range(12):
    cy, cx = rng.uniform(0, 1, 2) * (yy.max(), xx.max())
    ry, rx = rng.uniform(0.03, 0.25, 2)
    color = rng.uniform(0, 1, 3)
    if rng.uniform() < 0.5:
      inside = (np.abs(yy - cy) < ry) & (np.abs(xx - cx) < rx)
    else:
      inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
    image[inside] = color
  freq = rng.uniform(20, 60, 2)
  image += 0.08 * (np.sin(freq[0] * yy) * np.sin(freq[1] * xx))[..., None]
  image += rng.normal(0, 0.02, image.shape)
  return np.clip(np.round(image * 255), 0, 255).astype(np.uint8)
