r"""A control for the demo: a plain residual CNN trained on the demo's pairs.

How much can any small network gain on `synthetic_blur/mild` in a few CPU
minutes? This trains a plain stack of 3x3 convolutions and ReLUs (output =
input + residual) on the same training pairs, crops, batch and optimizer as
`configs/demo.py` (Charbonnier loss, Adam with warm-up and cosine decay), and
reports the held-out PSNR with the trainer's metrics at four points. The
demo dataset is built in runs/data first if missing, as the trainer does.

  python bench/demo_baseline.py [--steps=800] [--width=32] [--depth=8]
"""

from __future__ import annotations

import argparse
import pathlib
import time
from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tensorflow_datasets as tfds

from configs import demo
from fcn_jax import data
from fcn_jax import distributed
from fcn_jax import losses
from fcn_jax import metrics
from fcn_jax import train

ROOT = pathlib.Path(__file__).resolve().parents[1]


class PlainCNN(nn.Module):
  """depth 3x3 convolutions of `width` channels with ReLUs; adds the input."""

  width: int
  depth: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = x
    for _ in range(self.depth - 1):
      y = nn.relu(nn.Conv(self.width, (3, 3))(y))
    return x + nn.Conv(3, (3, 3))(y)


def load_pairs(spec: str, data_dir: str) -> tuple[np.ndarray, np.ndarray]:
  """All (blurry, sharp) pairs of a split as float32 arrays in [0, 1]."""
  name, split = data.parse_dataset(spec)
  source = tfds.data_source(name, split=split, data_dir=data_dir)
  pairs = [(np.asarray(e['blur']), np.asarray(e['sharp'])) for e in source]
  blur, sharp = (np.stack(p).astype(np.float32) / 255 for p in zip(*pairs))
  return blur, sharp


def main(argv: Optional[Sequence[str]] = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--steps', type=int, default=800)
  parser.add_argument('--width', type=int, default=32)
  parser.add_argument('--depth', type=int, default=8)
  parser.add_argument(
    '--learning_rate',
    type=float,
    default=None,
    help="Peak learning rate (default: the demo config's).",
  )
  args = parser.parse_args(argv)
  config = demo.get_config()
  if (
    args.steps <= config.optimizer.warmup_steps
    or args.width < 1
    or args.depth < 2
  ):
    parser.error(
      f'need --steps > {config.optimizer.warmup_steps} (the warm-up), '
      '--width >= 1 and --depth >= 2'
    )
  config.data_dir = str(ROOT / config.data_dir)
  config.num_train_steps = args.steps
  if args.learning_rate:
    config.optimizer.learning_rate = args.learning_rate
  specs = (config.train_dataset, config.evals[config.best_eval].dataset)
  try:
    distributed.prepare_datasets(specs, config.data_dir)
  except train.ConfigError as e:
    parser.exit(2, f'demo_baseline.py: {e}\n')
  train_blur, train_sharp = load_pairs(specs[0], config.data_dir)
  test_blur, test_sharp = load_pairs(specs[1], config.data_dir)
  tx = train.create_optimizer(config)
  model = PlainCNN(args.width, args.depth)
  crop, batch = config.crop_size, config.batch_size
  params = model.init(
    jax.random.key(config.seed), jnp.zeros((1, crop, crop, 3))
  )
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, blur, sharp):
    def loss_fn(p):
      return losses.charbonnier(
        model.apply(p, blur), sharp, config.loss.charbonnier_eps
      )

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  @jax.jit
  def psnr(params, blur, sharp):
    return metrics.image_metrics(
      jnp.clip(model.apply(params, blur), 0, 1), sharp
    )['psnr']

  def test_psnr(params) -> float:
    return float(
      np.mean(
        np.concatenate(
          [
            psnr(params, test_blur[i : i + 8], test_sharp[i : i + 8])
            for i in range(0, len(test_blur), 8)
          ]
        )
      )
    )

  input_psnr = float(
    np.mean(metrics.image_metrics(test_blur, test_sharp)['psnr'])
  )
  print(
    f'{len(train_blur)} training and {len(test_blur)} test pairs; '
    f'PlainCNN(width={args.width}, depth={args.depth}); blurry test PSNR '
    f'{input_psnr:.3f} dB',
    flush=True,
  )
  rng = np.random.default_rng(config.seed)
  size = train_blur.shape[1]
  start = time.perf_counter()
  for i in range(1, args.steps + 1):
    idx = rng.integers(0, len(train_blur), batch)
    y0, x0 = rng.integers(0, size - crop + 1, (2, batch))
    window = [
      np.s_[j, y : y + crop, x : x + crop] for j, y, x in zip(idx, y0, x0)
    ]
    blur = np.stack([train_blur[w] for w in window])
    sharp = np.stack([train_sharp[w] for w in window])
    if rng.random() < 0.5:
      blur, sharp = blur[:, :, ::-1], sharp[:, :, ::-1]
    params, opt_state, loss = step(params, opt_state, blur, sharp)
    if i % (args.steps // 4) == 0:
      restored = test_psnr(params)
      print(
        f'step {i}: {time.perf_counter() - start:.0f} s, loss {float(loss):.4f}, '
        f'test PSNR {restored:.3f} dB ({restored - input_psnr:+.2f} dB)',
        flush=True,
      )


if __name__ == '__main__':
  main()
