r"""The paper's Table 2 ablations, on the paper's recipe (configs/gopro.py).

One row per run: the number of stages (1-4) and the module removed (pb, efem,
msam, rim; or none):

  python main.py --config=configs/ablation.py:stages=3,without=msam \
      --workdir=runs/ablation_s3_msam

How each switch maps onto the release's modules, and what "stages" means here
(the paper does not say), is in fcn_jax/models/fcn.py and the README. Removing
PB removes the query-key gate with it (EFEM gates PB's map): without=pb at 4
stages is MPRNet. Runs at fewer stages also log the losses of the stages they
do not build (constant: the blurry input's).
"""

import ml_collections

from configs import gopro

STAGES = (1, 2, 3, 4)
# `without=` -> the config.model switches it turns off.
REMOVE = {
  'none': {},
  'pb': {'use_pb': False, 'use_efem': False},
  'efem': {'use_efem': False},
  'msam': {'use_msam': False},
  'rim': {'use_rim': False},
}
# The paper's Table 2: (stages, removed) -> GoPro test PSNR (dB).
PAPER_PSNR = {
  (1, 'pb'): 28.99,
  (1, 'efem'): 27.45,
  (1, 'msam'): 26.19,
  (1, 'rim'): 26.84,
  (2, 'pb'): 29.69,
  (2, 'efem'): 29.32,
  (2, 'msam'): 28.78,
  (2, 'rim'): 28.35,
  (3, 'pb'): 30.97,
  (3, 'efem'): 30.48,
  (3, 'msam'): 29.91,
  (3, 'rim'): 29.33,
  (4, 'pb'): 31.84,
  (4, 'efem'): 31.24,
  (4, 'msam'): 30.71,
  (4, 'rim'): 30.04,
}


def parse(arg: str) -> tuple[int, str]:
  """'stages=3,without=msam' -> (3, 'msam'); defaults 4 and 'none'.

  Raises:
    ValueError: one line naming the argument or value that is not understood.
  """
  values = {'stages': '4', 'without': 'none'}
  for item in filter(None, (arg or '').split(',')):
    key, sep, value = item.partition('=')
    key, value = key.strip(), value.strip()
    if not sep or key not in values:
      raise ValueError(
        f'configs/ablation.py: {item!r} is not stages=N or '
        f'without=MODULE (e.g. stages=3,without=msam)'
      )
    values[key] = value.lower()
  if values['stages'] not in {str(s) for s in STAGES}:
    raise ValueError(
      f'configs/ablation.py: stages={values["stages"]!r}: use 1, 2, 3 or 4'
    )
  if values['without'] not in REMOVE:
    raise ValueError(
      f'configs/ablation.py: without={values["without"]!r}: use '
      f'one of {", ".join(REMOVE)}'
    )
  return int(values['stages']), values['without']


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """The row `arg`; a bad one exits with one line (ml_collections would wrap a
  ValueError in a traceback)."""
  try:
    stages, without = parse(arg)
  except ValueError as e:
    raise SystemExit(f'error: {e}') from None
  config = gopro.get_config()
  config.model.update(stages=stages, **REMOVE[without])
  return config
