"""Named FCN sizes, written once: configs, tests and benchmarks use these.

Each preset holds the architecture fields of `FCN` (the official
hyper-parameters); dtype, precision, remat and TLC stay per run:

  FCN(**presets.TINY)
  config.model.update(presets.PRESETS['demo'])

* `full`: the published model (FCN's defaults; configs/default.py, gopro*.py).
* `demo`: the reduced width that configs/demo.py trains on a CPU.
* `tiny`: the smallest sensible model, for tests and configs/tiny.py.
"""

from __future__ import annotations

import types
from typing import Mapping

FULL: Mapping[str, int] = types.MappingProxyType(
  dict(
    n_feat=96,
    scale_unetfeats=48,
    scale_orsnetfeats=32,
    num_cab=8,
    kernel_size=3,
    reduction=4,
  )
)
DEMO: Mapping[str, int] = types.MappingProxyType(
  dict(FULL, n_feat=16, scale_unetfeats=8, scale_orsnetfeats=8, num_cab=1)
)
TINY: Mapping[str, int] = types.MappingProxyType(
  dict(FULL, n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4, num_cab=1)
)

PRESETS: Mapping[str, Mapping[str, int]] = types.MappingProxyType(
  {'full': FULL, 'demo': DEMO, 'tiny': TINY}
)
