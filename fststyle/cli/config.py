"""The jobs' Hydra configs: composing them, the ``${bundled:...}`` paths in them, and the description of
every setting (the comment beside it in its YAML file) that ``--help`` lists. The command line's checks
(fststyle.cli.arguments) build on this module, never the other way."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from fststyle.bundled import bundled_path, config_dir


def register_resolvers() -> None:
    """Teach OmegaConf ``${bundled:data/styles/starry_night.jpg}``: a file shipped with fststyle, wherever it is
    installed. Every composition of a job config goes through here first."""
    if not OmegaConf.has_resolver("bundled"):
        OmegaConf.register_new_resolver("bundled", lambda relative: str(bundled_path(relative)))


def is_open_mapping(key: str) -> bool:
    """Whether ``key`` (its last component) names a mapping whose entries a user may add with ``+key=value``: a
    loss term's layer weights (``content_layers``, ``style_layers``, any ``<term>_layers``) or the extra
    callbacks. ``--help`` lists each as one setting, and the command line replaces one written whole."""
    leaf = key.rsplit(".", 1)[-1]
    return leaf.endswith("_layers") or leaf == "callbacks"


_KEY_LINE = re.compile(r"^(?P<indent>\s*)(?P<key>[A-Za-z_][\w]*):(?P<rest>.*)$")


def compose(job: str, overrides: Sequence[str] = (), hydra: bool = False, folder: Path | None = None) -> DictConfig:
    """conf/<job>.yaml (or ``folder``/<job>.yaml) composed with ``overrides`` as the command line composes it
    (``hydra``: with its ``hydra`` node, e.g. ``hydra.runtime.choices``)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_resolvers()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str((folder or config_dir()).resolve()), version_base="1.3"):
            return hydra_compose(config_name=job, overrides=list(overrides), return_hydra_config=hydra)
    finally:
        GlobalHydra.instance().clear()


def _package_header(path: Path) -> str | None:
    """The ``# @package`` line's package of a config file, if it has one."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# @package"):
            return line.split()[-1]
    return None


def _joined(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix and key else prefix or key


def _config_files(path: Path, package: str, choices: dict[str, Any]) -> Iterator[tuple[Path, str]]:
    """``path`` and the config files its defaults list pulls in, each with the package it is merged at.

    Group options follow ``choices`` (Hydra's ``hydra.runtime.choices``); experiment presets only change
    values, so they are not read for descriptions."""
    header = _package_header(path)
    package = "" if header == "_global_" else package
    yield path, package
    defaults = OmegaConf.load(path).get("defaults") or []
    group_root = path.parent
    for entry in defaults:
        if isinstance(entry, str):
            if entry == "_self_":
                continue
            name, _, at = entry.partition("@")
            # a path with a leading / is from the config root (a term's node, /loss/terms/histogram), else from
            # this file's group
            child = config_dir() / f"{name[1:]}.yaml" if name.startswith("/") else group_root / f"{name}.yaml"
            folder = Path(name).parent.as_posix()
            child_package = package if at == "_here_" else _joined(package, at or folder.strip(".").replace("/", "."))
        else:
            (spec, option), = dict(entry).items()
            if spec.startswith("override") or option is None or spec == "experiment":
                continue
            group, _, at = spec.partition("@")
            option = choices.get(spec, option)
            child = group_root / group / f"{option}.yaml"
            child_package = package if at == "_here_" else _joined(package, at or group.replace("/", "."))
        if child.is_file():
            yield from _config_files(child, child_package, choices)


def _comments(path: Path, package: str) -> dict[str, str]:
    """Dotted key (under ``package``) -> the comment on its line in ``path``, else the comment line above."""
    found: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    above: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(stripped.lstrip("# ").strip())
            continue
        match = _KEY_LINE.match(line)
        if not match:
            above = []
            continue
        indent = len(match["indent"])
        stack = [(level, key) for level, key in stack if level < indent]
        stack.append((indent, match["key"]))
        value, _, comment = match["rest"].partition(" #")
        description = comment.strip() or _first_sentence(" ".join(above))
        if description:
            found[_joined(package, ".".join(key for _, key in stack))] = description
        above = []
    return found


def _first_sentence(text: str) -> str:
    """``text`` up to the end of its first sentence."""
    return re.split(r"(?<=[.;])\s", text, maxsplit=1)[0] if text else ""


def setting_descriptions(job: str, overrides: Sequence[str] = ()) -> list[tuple[str, str, str]]:
    """(dotted key, default as written on the command line, description) for every setting of ``job``
    composed with the group choices among ``overrides``."""
    cfg = compose(job, overrides, hydra=True)
    choices = {str(key): value for key, value in cfg.hydra.runtime.choices.items() if not str(key).startswith("hydra/")}
    descriptions: dict[str, str] = {}
    for path, package in _config_files(config_dir() / f"{job}.yaml", "", choices):
        descriptions.update(_comments(path, package))
    settings = []
    for key, value in _leaves(cfg, ""):
        shown = json.dumps(OmegaConf.to_container(value)) if isinstance(value, DictConfig | ListConfig) else _scalar(value)
        settings.append((key, shown, descriptions.get(key, "")))
    return settings


def _scalar(value: Any) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _leaves(node: DictConfig, prefix: str) -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every setting under ``node``, open mappings as one setting; ``hydra`` left out."""
    for key in node.keys():
        if key == "hydra" and not prefix:
            continue
        dotted = _joined(prefix, str(key))
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not is_open_mapping(str(key)):
            yield from _leaves(child, dotted)
        else:
            yield dotted, child._value() if not isinstance(child, DictConfig | ListConfig) else child
