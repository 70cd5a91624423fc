r"""The GoPro recipe (configs/gopro.py) on TPU: the paper's widths, bf16, remat.

The published network is unchanged: widths 96, 144 (96 + 48), 192 (96 + 2*48)
and 128 (96 + 32, stage 3) stay as they are. A TPU's MXU works on 128-wide
lanes, so XLA pads a channel dimension up to a multiple of 128. Forward MACs
per 256x256 image (1.53 TMAC, counted from the network's convolutions):
  128 -> 128   64.4 %   full lanes
   96 ->  96   20.2 %   padded to 128: 56 % of the MACs issued are useful
  144 -> 144    8.1 %   padded to 256: 32 % useful
  192 -> 192    2.9 %   padded to 256: 56 % useful
  mixed         4.4 %
Expected MXU use: at most 83 % of the issued MACs are useful (sum over convs
of cin*cout / (pad128(cin)*pad128(cout))); padded activations take +33 %
(96, 192) and +78 % (144) memory. Widening to 128/256 would change the
network and its published weights, so it is not offered.

Per chip: batch 16 in bfloat16 with per-CAB remat (saved residuals 0.93 GiB
per image: 15 GiB on a v4's 32 GiB; on a v5e's 16 GiB use 8 per chip).

  python main.py --config=configs/gopro_tpu.py --workdir=gs://.../gopro
"""

from configs import gopro


def get_config():
  config = gopro.get_config()
  config.model.dtype = 'bfloat16'
  config.model.remat = (0, 1, 2, 3)
  config.model.remat_granularity = 'block'
  config.model.remat_policy = 'nothing_saveable'
  return config
