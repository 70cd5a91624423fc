r"""FCN trained on RealBlur-J, after the RealBlur paper's recipe.

The RealBlur paper (Rim et al., ECCV 2020, section 6; the training commands
in github rimchang/RealBlur and the defaults of its SRN-Deblur code,
github rimchang/SRN-Deblur run_model.py and models/model.py) fine-tunes a
GoPro-trained network: Adam at 1e-4, batch 16, random 256x256 crops,
262000 iterations, the learning rate warmed up over the first 5000 and then
decayed polynomially (power 0.3) to 1e-5. Here:

* the start is a GoPro-trained workdir or converted weights, given with
  --config.init_from (from scratch when unset);
* the training set is realblur/j:train (3758 pairs); the paper also mixes in
  its BSD-B set and GoPro, each oversampled to 20000 pairs, which this
  one-dataset trainer does not do (train on realblur/r:train with
  --config.train_dataset=realblur/r:train and evals for RealBlur-R);
* the schedule is 'warmup_cosine' (5000 warm-up steps, cosine to 1e-5), the
  nearest one the trainer offers to the paper's polynomial decay.

Evaluation: RealBlur-J test with the aligned figures, every 30000 steps (the
paper's code saved every 30000) and at the end.

  python main.py --config=configs/realblur.py --workdir=runs/realblur_j \
      --config.init_from=runs/gopro --config.data_dir=~/tensorflow_datasets
"""

import ml_collections

from configs import default
from fcn_jax import evaluators


def get_config():
  config = default.get_config()
  config.train_dataset = 'realblur/j:train'
  config.batch_size = 16
  config.crop_size = 256
  config.train_patch = 'crop'
  config.num_train_steps = 262_000
  config.optimizer.learning_rate = 1e-4
  config.optimizer.schedule = 'warmup_cosine'
  config.optimizer.warmup_steps = 5000
  config.optimizer.end_learning_rate = 1e-5
  config.checkpoint_every_steps = 5000
  config.evals = ml_collections.ConfigDict(
    dict(
      realblur_j=evaluators.evaluator_config(
        'aligned', 'realblur/j:test', every_steps=30_000
      ),
    ),
    sort_keys=False,
  )
  config.best_eval = 'realblur_j'
  return config
