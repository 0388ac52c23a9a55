"""What fststyle ships beside its code: the configs, the sample data and the trained style models.

In a clone they are the repository's ``conf/``, ``data/`` and ``checkpoints/``; a wheel installs the same
folders inside the package (pyproject.toml maps them), so an installed fststyle runs outside the repo too.
"""

from __future__ import annotations

from pathlib import Path

from fststyle.errors import UserError

PACKAGE = Path(__file__).resolve().parent
#: the shipped folders, by their name in a clone -> their name inside an installed package (``data`` is
#: ``sample_data`` there)
SHIPPED_FOLDERS = {"conf": "conf", "data": "sample_data", "checkpoints": "checkpoints"}
MODEL_SUFFIX = ".safetensors"


def bundled_path(relative: str | Path) -> Path:
    """The shipped file or folder ``relative`` names as in a clone (``data/styles/udnie.jpg``, ``conf``)."""
    folder, *rest = Path(relative).parts
    if folder not in SHIPPED_FOLDERS:
        raise ValueError(f"{relative}: fststyle ships only {', '.join(SHIPPED_FOLDERS)}")
    installed = PACKAGE / SHIPPED_FOLDERS[folder]
    root = installed if installed.is_dir() else PACKAGE.parent / folder
    return root.joinpath(*rest)


def config_dir() -> Path:
    """The folder of fststyle's Hydra configs (train.yaml, stylize.yaml, ...)."""
    return bundled_path("conf")


def shipped_models() -> dict[str, Path]:
    """The style models fststyle ships, by name (``starry_night`` -> its ``.safetensors`` file)."""
    return {path.stem: path for path in sorted(bundled_path("checkpoints").glob(f"*{MODEL_SUFFIX}"))}


def find_model(name_or_path: str | Path) -> Path:
    """A style model's file from a path, or from the name of a shipped model (``starry_night``).

    An existing file always wins over a shipped name; anything else that is not a shipped name is returned
    as a path, for the loader to report as missing."""
    path = Path(name_or_path)
    if path.exists() or path.suffix or len(path.parts) != 1:
        return path
    models = shipped_models()
    if str(name_or_path) in models:
        return models[str(name_or_path)]
    raise UserError(f"model {str(name_or_path)!r} is neither a file nor a shipped model: pass a .safetensors "
                    f"file, or one of {', '.join(models) or 'none'} (fststyle models lists them)")
