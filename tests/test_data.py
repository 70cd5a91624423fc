"""Tests of fcn_jax.data on tiny datasets built once per module."""

import itertools
import os

import numpy as np
from PIL import Image
from PIL import ImageEnhance
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from fcn_jax import data
from fcn_jax.data import augment
from tfds_gopro.synthetic_blur import camera_shake
from tfds_gopro.synthetic_blur import synthetic_blur_dataset_builder as sb

SHAPES = ((16, 24), (24, 16), (16, 24), (8, 8), (16, 24), (24, 16), (16, 24))


def _coded_photo(height: int, width: int, tag: int) -> np.ndarray:
  """Every pixel distinct: R = x, G = y, B = tag."""
  yy, xx = np.mgrid[0:height, 0:width]
  return np.stack([xx, yy, np.full_like(xx, tag)], -1).astype(np.uint8)


with tfds.core.registered.skip_registration():

  class MixedShapes(tfds.core.GeneratorBasedBuilder):
    """Pairs of several sizes (blur = 255 - sharp), read back from files."""

    VERSION = tfds.core.Version('1.1.0')
    SIZES = True  # Whether the examples store their height and width.

    def _info(self):
      image = tfds.features.Image(shape=(None, None, 3), encoding_format='png')
      features = {'blur': image, 'sharp': image, 'id': tfds.features.Text()}
      if self.SIZES:
        features.update(
          height=tfds.features.Scalar(dtype=np.int32),
          width=tfds.features.Scalar(dtype=np.int32),
        )
      return tfds.core.DatasetInfo(
        builder=self, features=tfds.features.FeaturesDict(features)
      )

    def _split_generators(self, dl_manager):
      return {'test': self._generate_examples()}

    def _generate_examples(self):
      for i, (h, w) in enumerate(SHAPES):
        sharp = _coded_photo(h, w, i)
        sizes = dict(height=h, width=w) if self.SIZES else {}
        yield i, {'blur': 255 - sharp, 'sharp': sharp, 'id': f'img{i}'} | sizes

  class UnsizedShapes(MixedShapes):
    """MixedShapes as the builders wrote them before they stored sizes."""

    VERSION = tfds.core.Version('1.0.0')
    SIZES = False


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory) -> str:
  root = tmp_path_factory.mktemp('pipeline')
  photos, coded = root / 'photos', root / 'coded'
  photos.mkdir()
  coded.mkdir()
  for i in range(4):
    Image.fromarray(
      camera_shake.procedural_photo(np.random.default_rng(i), 40, 56)
    ).save(photos / f'p{i}.png')
    Image.fromarray(_coded_photo(40, 56, 40 * i)).save(coded / f'c{i}.png')
  data = root / 'data'
  common = dict(
    crop_height=32,
    crop_width=48,
    crops_per_photo=2,
    test_fraction=0.25,
    max_blur=6.0,
  )
  configs = [
    sb.SyntheticBlurConfig(name='pipe', source_dir=str(photos), **common),
    # No motion, no noise: blur == sharp exactly.
    sb.SyntheticBlurConfig(
      name='aligned',
      source_dir=str(coded),
      min_blur=0.0,
      max_rotation=0.0,
      shot_noise=0.0,
      read_noise=0.0,
      **(common | {'max_blur': 0.0}),
    ),
  ]
  for config in configs:
    sb.Builder(data_dir=data, config=config).download_and_prepare()
  for builder in (MixedShapes, UnsizedShapes):
    builder(data_dir=data, file_format='array_record').download_and_prepare()
  return str(data)


PIPE = 'synthetic_blur/pipe:train'  # 3 photos x 2 crops = 6 examples.
ALIGNED = 'synthetic_blur/aligned:train'


def _stored(spec, data_dir):
  name, split = data.parse_dataset(spec)
  source = tfds.data_source(name, split=split, data_dir=data_dir)
  return [source[i] for i in range(len(source))]


def _take(iterator, n):
  return list(itertools.islice(iterator, n))


def _train(data_dir, spec=PIPE, **kwargs):
  args = dict(
    global_batch_size=4, crop_size=16, seed=0, process_index=0, process_count=1
  )
  args.update(kwargs)
  return data.train_iterator(spec, data_dir, **args)


def test_tensorflow_sees_no_gpu():
  assert not tf.config.get_visible_devices('GPU')


def test_parse_dataset():
  assert data.parse_dataset('gopro/blur:train') == ('gopro/blur', 'train')
  assert data.parse_dataset('hide:test') == ('hide', 'test')
  assert data.parse_dataset('x:train[:10]') == ('x', 'train[:10]')
  assert data.parse_dataset('x:1.0.0:train') == ('x:1.0.0', 'train')
  for bad in ('gopro', ':train', 'gopro:'):
    with pytest.raises(ValueError, match='name'):
      data.parse_dataset(bad)


def test_check_dataset_names_the_build_command(data_dir, tmp_path):
  data.check_dataset(PIPE, data_dir)
  with pytest.raises(ValueError) as e:
    data.check_dataset('gopro:train', str(tmp_path))
  message = str(e.value)
  assert '\n' not in message
  assert (
    f'tfds build tfds_gopro/gopro --manual_dir=<folder with the gopro'
    f' download> --data_dir={tmp_path}'
  ) in message
  with pytest.raises(ValueError, match='--config=blur_gamma'):
    data.check_dataset('gopro/blur_gamma:test', str(tmp_path))
  with pytest.raises(ValueError, match='tfds build tfds_gopro/synthetic_blur'):
    data.check_dataset('synthetic_blur/nothere:train', data_dir)
  with pytest.raises(ValueError, match='no split'):
    data.check_dataset('synthetic_blur/pipe:validation', data_dir)


def test_prepare_synthetic(data_dir, tmp_path, monkeypatch):
  built = []
  monkeypatch.setattr(
    sb.Builder,
    'download_and_prepare',
    lambda self, **kw: built.append(self.builder_config.name),
  )
  data.prepare_synthetic('synthetic_blur:train', str(tmp_path))
  assert built == ['skimage']  # The default config, missing: built.
  data.prepare_synthetic('synthetic_blur/pipe:train', data_dir)  # Prepared.
  data.prepare_synthetic('synthetic_blur/other:train', data_dir)  # JSON config.
  data.prepare_synthetic('gopro:train', str(tmp_path))  # Not synthetic.
  assert built == ['skimage']


def test_num_examples_and_ids(data_dir):
  assert data.num_examples(PIPE, data_dir) == 6
  assert data.num_examples('synthetic_blur/pipe:test', data_dir) == 2
  assert data.num_examples('synthetic_blur/pipe:train[1:5]', data_dir) == 4
  assert data.num_examples('synthetic_blur/pipe:train[:50%]', data_dir) == 3
  ids = data.eval_ids(PIPE, data_dir)
  assert ids == [ex['id'].decode() for ex in _stored(PIPE, data_dir)]


def test_train_batches_shapes_and_ranges(data_dir):
  # process_index/process_count default to JAX's (one process here).
  default_hosts = _take(
    _train(data_dir, process_index=None, process_count=None), 1
  )[0]
  for batch in [default_hosts] + _take(_train(data_dir), 3):
    assert set(batch) == {'blur', 'sharp'}
    for x in batch.values():
      assert x.shape == (4, 16, 16, 3) and x.dtype == np.float32
      assert 0.0 <= x.min() and x.max() <= 1.0
    assert not np.array_equal(batch['blur'], batch['sharp'])


def test_train_stream_is_a_function_of_seed_and_step(data_dir):
  a = _take(_train(data_dir), 5)
  b = _take(_train(data_dir), 5)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x['blur'], y['blur'])
    np.testing.assert_array_equal(x['sharp'], y['sharp'])
  assert not np.array_equal(a[0]['blur'], a[1]['blur'])
  other = _take(_train(data_dir, seed=1), 1)[0]
  assert not np.array_equal(a[0]['blur'], other['blur'])
  # Resuming at step 3 (past the end of the first epoch: 12 > 6 samples).
  resumed = _take(_train(data_dir, start_step=3), 2)
  for x, y in zip(resumed, a[3:]):
    np.testing.assert_array_equal(x['blur'], y['blur'])
    np.testing.assert_array_equal(x['sharp'], y['sharp'])


def test_host_shards_concatenate_to_the_global_batch(data_dir):
  whole = _take(_train(data_dir, start_step=2), 3)
  shards = [
    _take(_train(data_dir, start_step=2, process_index=p, process_count=2), 3)
    for p in range(2)
  ]
  for step in range(3):
    for key in ('blur', 'sharp'):
      assert shards[0][step][key].shape == (2, 16, 16, 3)
      np.testing.assert_array_equal(
        np.concatenate([shards[0][step][key], shards[1][step][key]]),
        whole[step][key],
      )
  with pytest.raises(ValueError, match='multiple'):
    _train(data_dir, global_batch_size=3, process_count=2)


def test_each_epoch_visits_every_example_once(data_dir):
  # A crop as large as the image without augmentation starts at (0, 0), so
  # its top-left 32x48 is the stored example.
  stored = [ex['sharp'] for ex in _stored(ALIGNED, data_dir)]
  batches = _take(
    _train(data_dir, ALIGNED, global_batch_size=3, crop_size=48, augment=False),
    4,
  )
  crops = np.concatenate([b['sharp'] for b in batches])[:, :32, :48]
  order = []
  for crop in crops:
    match = [
      i for i, s in enumerate(stored) if np.array_equal(np.round(crop * 255), s)
    ]
    assert len(match) == 1
    order.extend(match)
  assert sorted(order[:6]) == sorted(order[6:]) == list(range(6))
  assert order[:6] != order[6:]


def _symmetries(x: np.ndarray) -> list[np.ndarray]:
  """The 8 symmetries of the square applied to x."""
  rotations = [np.rot90(x, k) for k in range(4)]
  return rotations + [r[:, ::-1] for r in rotations]


def _window_of(candidate: np.ndarray, images: list[np.ndarray]) -> bool:
  """Whether `candidate` is an exact window of one of `images`."""
  for image in images:
    hits = np.argwhere((image == candidate[0, 0]).all(axis=-1))
    for y, x in hits:
      h, w = candidate.shape[:2]
      if np.array_equal(image[y : y + h, x : x + w], candidate):
        return True
  return False


def test_augmentation_keeps_pairs_aligned_and_covers_all_symmetries(data_dir):
  stored = [ex['sharp'] for ex in _stored(ALIGNED, data_dir)]
  batches = _take(
    _train(data_dir, ALIGNED, global_batch_size=8, crop_size=16), 20
  )
  seen, jittered = [], 0
  for batch in batches:
    np.testing.assert_array_equal(batch['blur'], batch['sharp'])
    for crop in batch['sharp']:
      pixels = crop * 255
      # Saturation works on 8-bit levels, as PIL's does.
      np.testing.assert_allclose(pixels, np.round(pixels), atol=1e-3)
      crop8 = np.round(pixels).astype(np.uint8)
      # Exactly one symmetry maps the crop back to a window of an example,
      # unless saturation changed its colours.
      found = [
        k for k, c in enumerate(_symmetries(crop8)) if _window_of(c, stored)
      ]
      assert len(found) <= 1
      if found:
        seen.extend(found)
      else:
        jittered += 1
  assert set(seen) == set(range(8))
  assert 0.15 < jittered / 160 < 0.55  # Saturation jitter with p = 1/3.


def test_crops_larger_than_the_images_are_reflect_padded(data_dir):
  batch = _take(_train(data_dir, ALIGNED, crop_size=64), 1)[0]
  assert batch['blur'].shape == (4, 64, 64, 3)
  np.testing.assert_array_equal(batch['blur'], batch['sharp'])
  plain = _take(_train(data_dir, ALIGNED, crop_size=64, augment=False), 1)[0]
  image = np.round(plain['sharp'][0] * 255)
  np.testing.assert_array_equal(image[32:34], image[30:28:-1])  # Mirror.
  np.testing.assert_array_equal(image[:, 48:50], image[:, 46:44:-1])


def _run_eval(spec, data_dir, global_batch_size, process_count):
  per_host = [
    list(
      data.eval_iterator(
        spec,
        data_dir,
        global_batch_size=global_batch_size,
        process_index=p,
        process_count=process_count,
      )
    )
    for p in range(process_count)
  ]
  assert len({len(batches) for batches in per_host}) == 1
  for batches in zip(*per_host):
    assert len({b['blur'].shape for b in batches}) == 1
  return per_host


@pytest.mark.parametrize(
  'global_batch_size,process_count', [(3, 1), (4, 2), (2, 2)]
)
def test_eval_visits_every_example_once(
  data_dir, global_batch_size, process_count
):
  spec = 'mixed_shapes:test'
  per_host = _run_eval(spec, data_dir, global_batch_size, process_count)
  stored = _stored(spec, data_dir)
  visited = []
  for batches in per_host:
    for b in batches:
      host_batch = global_batch_size // process_count
      assert b['blur'].shape[0] == host_batch
      assert b['blur'].dtype == np.float32 and b['mask'].dtype == bool
      assert b['index'].dtype == np.int32
      np.testing.assert_array_equal(b['mask'], b['index'] >= 0)
      for blur, sharp, index, mask in zip(
        b['blur'], b['sharp'], b['index'], b['mask']
      ):
        np.testing.assert_allclose(blur, 1 - sharp, atol=1e-6)
        if mask:
          visited.append(int(index))
          np.testing.assert_array_equal(
            np.round(sharp * 255), stored[index]['sharp']
          )
  assert sorted(visited) == list(range(len(SHAPES)))
  # Groups: (16, 24) x4, (24, 16) x2, (8, 8) x1, each padded separately.
  groups = {(16, 24): 4, (24, 16): 2, (8, 8): 1}
  expected = sum(-(-n // global_batch_size) for n in groups.values())
  assert len(per_host[0]) == expected


def test_eval_on_synthetic_blur(data_dir):
  (batches,) = _run_eval('synthetic_blur/pipe:test', data_dir, 4, 1)
  assert len(batches) == 1
  b = batches[0]
  assert b['blur'].shape == (4, 32, 48, 3)
  np.testing.assert_array_equal(b['index'], [0, 1, -1, -1])
  stored = _stored('synthetic_blur/pipe:test', data_dir)
  for i in range(2):
    np.testing.assert_array_equal(
      np.round(b['blur'][i] * 255), stored[i]['blur']
    )
  assert data.eval_ids('synthetic_blur/pipe:test', data_dir) == [
    ex['id'].decode() for ex in stored
  ]


def _pil_saturation(image: np.ndarray, factor: float) -> np.ndarray:
  return np.asarray(ImageEnhance.Color(Image.fromarray(image)).enhance(factor))


def test_saturation_matches_pil_exactly():
  """Bit for bit with Pillow, run as in the pipeline (a tf.data map)."""
  rng = np.random.default_rng(0)
  images = [
    rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    for h, w in ((64, 64), (33, 17), (128, 96))
  ]
  r, g = np.meshgrid(np.arange(256), np.arange(256), indexing='ij')
  images.append(  # Every (R, G) pair, with B = R + G mod 256.
    np.stack([r, g, (r + g) % 256], -1).astype(np.uint8)
  )
  factors = np.concatenate(
    [
      rng.uniform(0.8, 1.2, 12).astype(np.float32),
      np.float32([0.0, 0.5, 0.8, 1.0, 1.2, 2.0]),
    ]
  )
  for image in images:
    ds = tf.data.Dataset.from_tensor_slices(factors).map(
      lambda f, x=image: data.saturate(tf.constant(x), f)
    )
    for factor, ours in zip(factors, ds.as_numpy_iterator()):
      expected = _pil_saturation(image, float(factor))
      assert ours.dtype == np.uint8
      np.testing.assert_array_equal(ours, expected, err_msg=f'{factor}')
  # Grey is a fixed point (the luma of (v, v, v) is v).
  grey = np.repeat(np.arange(256, dtype=np.uint8)[:, None, None], 3, -1)
  np.testing.assert_array_equal(data.saturate(grey, 1.17).numpy(), grey)


def test_symmetries_are_the_releases_outcomes():
  """Outcome k of randint(0, 8) in the release's own tensor layout."""
  torch = pytest.importorskip('torch')
  image = np.arange(5 * 7 * 2, dtype=np.int32).reshape(5, 7, 2)
  chw = torch.from_numpy(image).permute(2, 0, 1)
  release = [  # The release's branches on a (C, H, W) tensor.
    chw,
    chw.flip(1),
    chw.flip(2),
    torch.rot90(chw, dims=(1, 2)),
    torch.rot90(chw, dims=(1, 2), k=2),
    torch.rot90(chw, dims=(1, 2), k=3),
    torch.rot90(chw.flip(1), dims=(1, 2)),
    torch.rot90(chw.flip(2), dims=(1, 2)),
    chw,
  ]
  assert len(data.SYMMETRIES) == len(release) == 9
  for k, expected in enumerate(release):
    ours = data.apply_symmetry(tf.constant(image), tf.constant(k)).numpy()
    np.testing.assert_array_equal(
      ours, expected.permute(1, 2, 0).numpy(), err_msg=f'outcome {k}'
    )
  # Outcomes 1..7 are the 7 non-identity symmetries of the square.
  square = image[:5, :5]
  results = {
    data.apply_symmetry(tf.constant(square), k).numpy().tobytes()
    for k in range(9)
  }
  assert len(results) == 8


def test_symmetry_draw_has_identity_twice_as_often():
  """_augment's draw: identity 2/9, each other symmetry 1/9."""
  # A grey 16x16 image with 256 distinct levels: saturation leaves it
  # unchanged and the crop is the whole image, so only the symmetry acts.
  grey = np.arange(256, dtype=np.uint8).reshape(16, 16)
  pair = tf.constant(np.repeat(grey[..., None], 6, -1))
  outcomes = {
    data.apply_symmetry(pair, k).numpy()[..., 0].tobytes(): k for k in range(8)
  }
  n = 1800
  ds = tf.data.Dataset.range(n).map(
    lambda j: augment.augment_pair(
      pair, tf.stack([tf.constant(7, tf.int64), j]), 16, True
    )[1]
  )
  counts = np.zeros(8)
  for crop in ds.as_numpy_iterator():
    levels = np.round(crop[..., 0] * 255).astype(np.uint8)
    counts[outcomes[levels.tobytes()]] += 1
  expected = n * np.array([2 / 9] + [1 / 9] * 7)
  sigma = np.sqrt(expected * (1 - expected / n))
  assert np.all(np.abs(counts - expected) < 4 * sigma), counts


def test_resize_patches(data_dir):
  """patch='resize': whole examples at crop_size, within a level of PIL."""
  rng = np.random.default_rng(1)
  image = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
  pair = tf.constant(np.concatenate([image, 255 - image], -1))
  blur, sharp = augment.augment_pair(
    pair, tf.constant([0, 0], tf.int64), 16, False, 'resize'
  )
  pil = np.asarray(
    Image.fromarray(image).resize((16, 16), Image.Resampling.BILINEAR)
  )
  ours = np.round(blur.numpy() * 255)
  assert np.abs(ours - pil).max() <= 1
  assert np.mean(ours != pil) < 0.2
  np.testing.assert_array_equal(
    np.round(sharp.numpy() * 255), _round_resize(255 - image, 16)
  )
  # Through the stream: each patch is a whole stored example, resized.
  stored = [ex['sharp'] for ex in _stored(ALIGNED, data_dir)]
  resized = [_round_resize(s, 16) for s in stored]
  batch = _take(_train(data_dir, ALIGNED, augment=False, patch='resize'), 1)[0]
  for crop in batch['sharp']:
    assert any(np.array_equal(np.round(crop * 255), r) for r in resized)


def _round_resize(image: np.ndarray, size: int) -> np.ndarray:
  return np.round(
    tf.image.resize(
      image.astype(np.float32), [size, size], antialias=True
    ).numpy()
  )


@pytest.mark.parametrize('spec', [PIPE, 'mixed_shapes:test'])
def test_decoded_cache_yields_the_png_batches(data_dir, tmp_path, spec):
  cache = str(tmp_path / 'decoded')
  for kwargs in (
    dict(dtype='float32'),
    dict(dtype='uint8', start_step=3, seed=5),
    dict(dtype='uint8', process_index=1, process_count=2),
  ):
    png = _take(_train(data_dir, spec, **kwargs), 4)
    fast = _take(_train(data_dir, spec, decoded_cache=cache, **kwargs), 4)
    for x, y in zip(png, fast):
      for key in ('blur', 'sharp'):
        assert x[key].dtype == y[key].dtype == np.dtype(kwargs['dtype'])
        np.testing.assert_array_equal(x[key], y[key])


def test_uint8_batches_are_the_float_batches_rounded(data_dir):
  floats = _take(_train(data_dir), 3)
  uint8s = _take(_train(data_dir, dtype='uint8'), 3)
  for x, y in zip(floats, uint8s):
    for key in ('blur', 'sharp'):
      assert y[key].dtype == np.uint8
      np.testing.assert_array_equal(np.round(x[key] * 255), y[key])
  with pytest.raises(ValueError, match='uint8'):
    _train(data_dir, dtype='float16')


def test_decoded_cache_holds_the_decoded_pairs_and_is_built_once(
  data_dir, tmp_path
):
  spec = 'mixed_shapes:test'
  cache = tmp_path / 'decoded'
  path, index = data.build_decoded_cache(spec, data_dir, str(cache))
  raw = np.fromfile(path, np.uint8)
  for ex, offset, shape in zip(
    _stored(spec, data_dir), index['offsets'], index['shapes']
  ):
    pair = raw[offset : offset + ex['blur'].size * 2].reshape(*shape, 6)
    np.testing.assert_array_equal(pair[..., :3], ex['blur'])
    np.testing.assert_array_equal(pair[..., 3:], ex['sharp'])
  assert sorted(p.name for p in cache.iterdir()) == sorted(
    [os.path.basename(path), os.path.basename(path)[:-3] + '.json']
  )
  stamp = os.stat(path).st_mtime_ns
  assert data.build_decoded_cache(spec, data_dir, str(cache))[0] == path
  assert os.stat(path).st_mtime_ns == stamp  # Reused, not rewritten.
  # A truncated data file is not trusted: the cache is made again.
  with open(path, 'r+b') as f:
    f.truncate(10)
  data.build_decoded_cache(spec, data_dir, str(cache))
  np.testing.assert_array_equal(np.fromfile(path, np.uint8), raw)
  with pytest.raises(ValueError, match='local folder'):
    data.build_decoded_cache(spec, data_dir, 'gs://bucket/decoded')


def test_a_dataset_of_an_older_version_names_the_rebuild_command(
  data_dir, tmp_path
):
  """GoPro prepared only at 1.0.0 (no height/width): one line, the command."""
  old = tmp_path / 'gopro' / 'blur' / '1.0.0'
  old.mkdir(parents=True)
  built = os.path.join(data_dir, 'synthetic_blur', 'pipe', '1.1.0')
  for name in os.listdir(built):
    (old / name).write_bytes(open(os.path.join(built, name), 'rb').read())
  with pytest.raises(ValueError) as e:
    data.check_dataset('gopro:test', str(tmp_path))
  message = str(e.value)
  assert '\n' not in message
  assert 'prepared at version 1.0.0, not 1.1.0' in message
  assert 'height and width' in message
  assert message.endswith(
    'rebuild it with: tfds build tfds_gopro/gopro --manual_dir=<folder with'
    f' the gopro download> --data_dir={tmp_path}'
  )


def test_eval_of_a_dataset_without_sizes_names_the_rebuild_command(data_dir):
  spec = 'unsized_shapes:test'
  data.check_dataset(spec, data_dir)  # It reads, and trains.
  _take(_train(data_dir, spec), 1)
  with pytest.raises(ValueError) as e:
    next(iter(data.eval_iterator(spec, data_dir, global_batch_size=2)))
  message = str(e.value)
  assert '\n' not in message
  assert 'stores no image sizes (height, width)' in message
  assert 'version 1.0.0' in message and 'tfds build' in message


def test_eval_shapes_are_the_stored_sizes(data_dir):
  """The plan's shapes (from height/width) are the decoded images' shapes."""
  spec = 'mixed_shapes:test'
  stored = _stored(spec, data_dir)
  for ex, (h, w) in zip(stored, SHAPES):
    assert ex['sharp'].shape == (h, w, 3)
    assert (ex['height'], ex['width']) == (h, w)
