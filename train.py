"""Train a fast style-transfer network (Johnson et al. 2016) for one style: ``fststyle train`` from a clone.

    python train.py experiment=demo                      # offline CPU demo on the bundled sample
    python train.py experiment=johnson2016 data.root=/data/coco style=data/styles/starry_night.jpg trainer=gpu
    python train.py ... ckpt_path=outputs/<date>/<time>  # resume that run from its last checkpoint

Exit status: 0 done, 2 a user error (one line naming the fix), 130/143 stopped by SIGINT/SIGTERM (resumable).
"""

import sys

from fststyle.cli.main import main

if __name__ == "__main__":
    main(["train", *sys.argv[1:]])
