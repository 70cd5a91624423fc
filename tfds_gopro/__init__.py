"""TFDS builders for motion deblurring: GoPro, HIDE, RealBlur, camera shake.

Importing this package registers the datasets `gopro`, `hide`, `realblur` and
`synthetic_blur` with TFDS, so that `tfds.load('gopro', data_dir=...)` finds them.
The folders are also folder-style builders for the TFDS command line:
`tfds build tfds_gopro/gopro`.
"""

from tfds_gopro.gopro import gopro_dataset_builder  # noqa: F401  (registers 'gopro')
from tfds_gopro.hide import hide_dataset_builder  # noqa: F401  (registers 'hide')
from tfds_gopro.synthetic_blur import synthetic_blur_dataset_builder  # noqa: F401
from tfds_gopro.realblur import realblur_dataset_builder  # noqa: F401
