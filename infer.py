"""Stylise photos with a trained model (engine=fast), or optimise an image directly (engine=gatys|mrf).

    python infer.py model=checkpoints/starry_night.safetensors input=photo.jpg output=out.jpg
    python infer.py engine=gatys content=photo.jpg style=starry.jpg output=out.png
    python infer.py --config-name compare model=... input=photos/ engines='[fast,gatys,mrf]' output=cmp/

Exit status: 0 done, 1 some inputs failed, 2 a user error (one line naming the fix).
"""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from fststyle.cli import command_line, run_job

CONFIG_DIR = Path(__file__).parent / "conf"


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="infer")
def main(cfg: DictConfig) -> None:
    if cfg.get("engines") is not None:
        from fststyle.compare import run
    elif cfg.engine.name == "fast":
        from fststyle.stylize import run
    else:
        from fststyle.optimize import run
    run_job(lambda: run(cfg))


if __name__ == "__main__":
    sys.argv = command_line(sys.argv, CONFIG_DIR, "infer")
    main()
