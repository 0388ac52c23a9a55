"""Train a fast style-transfer network (Johnson et al. 2016) for one style.

    python train.py experiment=demo                      # offline CPU demo on the bundled sample
    python train.py experiment=johnson2016 data.root=/data/coco style=data/styles/starry_night.jpg trainer=gpu
    python train.py ... ckpt_path=outputs/<date>/<time>/checkpoints/last.ckpt   # resume

Exit status: 0 done, 2 a user error (one line naming the fix), 130/143 stopped by SIGINT/SIGTERM (resumable).
"""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from fststyle.cli import command_line, run_job

CONFIG_DIR = Path(__file__).parent / "conf"


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> None:
    from fststyle.training import train

    run_job(lambda: train(cfg))


if __name__ == "__main__":
    sys.argv = command_line(sys.argv, CONFIG_DIR, "train")
    main()
