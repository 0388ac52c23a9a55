"""Stylise photos with a trained model (engine=fast), or optimise an image directly (engine=gatys|mrf).

    python infer.py model=checkpoints/starry_night.safetensors input=photo.jpg output=out.jpg
    python infer.py engine=gatys content=photo.jpg style=starry.jpg output=out.png
    python infer.py --config-name compare model=... input=photos/ engines='[fast,gatys,mrf]' output=cmp/
"""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="infer")
def main(cfg: DictConfig) -> None:
    if cfg.get("engines") is not None:
        from fststyle.compare import run
    elif cfg.engine.name == "fast":
        from fststyle.stylize import run
    else:
        from fststyle.optimize import run
    status = run(cfg)
    if status:  # hydra.main discards return values; SystemExit passes through it
        raise SystemExit(status)


if __name__ == "__main__":
    main()
