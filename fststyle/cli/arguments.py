"""Command-line overrides, checked before Hydra sees them: any file name works, and a typo is one line.

Hydra's override grammar rejects file names with non-ASCII letters, parentheses, quotes, ``#`` or ``~``,
and reads a comma as a sweep (``input=a,b.jpg``). Values of the path settings below are therefore quoted
for Hydra before it parses them, so ``input=été (1).jpg`` just works. A list of paths stays as written:
quote its items yourself, ``style="['c(1).jpg','é.jpg']"``.

Hydra answers an unknown key (``modle=x``) by suggesting ``+modle=x``, which would silently do nothing
here; a composition error becomes one line that names the setting and the fix (exit 2).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from fststyle.cli.config import compose, is_open_mapping
from fststyle.errors import UserError

#: settings whose values are file or folder paths (last component of the dotted key)
PATH_SETTINGS = frozenset({
    "model", "input", "output", "content", "style", "content_masks", "style_masks", "grid", "init",
    "save_dir", "tensorboard", "root", "preview", "cache_dir", "ckpt_path", "export_path", "weights", "ann_file",
})
#: Hydra command-line flags that take a value as the next argument
_FLAGS_WITH_VALUE = {"--config-name", "-cn", "--config-path", "-cp", "--config-dir", "-cd", "--cfg", "-c",
                     "--package", "-p", "--info", "-i", "--experimental-rerun"}
#: flags after which we leave the command line to Hydra untouched (help, sweeps, other config trees)
_HANDS_OFF_FLAGS = {"--help", "-h", "--hydra-help", "--multirun", "-m", "--config-path", "-cp",
                    "--config-dir", "-cd", "--shell-completion", "-sc", "--experimental-rerun"}


def hydra_quoted(value: str) -> str:
    """``value`` as a single-quoted Hydra string that parses back to exactly ``value``.

    In Hydra's quoted strings a quote is escaped as ``\\'`` and only backslashes right before a quote (or
    before the closing quote) need doubling; ``${`` is escaped so OmegaConf does not interpolate it.
    """
    escaped = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", value)
    escaped = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, escaped)
    return "'" + escaped.replace("${", "\\${") + "'"


def _split_override(argument: str) -> tuple[str, str] | None:
    """``key=value`` -> (key, value); None for flags and for ``+key``/``~key``/``++key`` forms."""
    if argument.startswith(("-", "+", "~")) or "=" not in argument:
        return None
    key, value = argument.split("=", 1)
    return key, value


def quote_path_values(overrides: Sequence[str]) -> list[str]:
    """Quote the values of path settings (``input=c(1).jpg`` -> ``input='c(1).jpg'``) for Hydra's parser.

    Left as written: ``null``, lists and dicts (``[...]``, ``{...}``), already quoted values, and values with
    an interpolation (``${...}``)."""
    quoted = []
    for argument in overrides:
        parts = _split_override(argument)
        if parts is not None:
            key, value = parts
            setting = key.split("@")[0].rsplit(".", 1)[-1]
            plain = value not in ("", "null") and not value.startswith(("[", "{", "'", '"')) and "${" not in value
            if setting in PATH_SETTINGS and plain and not key.startswith("hydra"):
                argument = f"{key}={hydra_quoted(value)}"
        quoted.append(argument)
    return quoted


def _config_name(argv: Sequence[str], default: str) -> str:
    """The ``--config-name``/``-cn`` given on the command line, else ``default``."""
    name = default
    for index, argument in enumerate(argv):
        if argument in ("--config-name", "-cn") and index + 1 < len(argv):
            name = argv[index + 1]
        elif argument.startswith("--config-name="):
            name = argument.split("=", 1)[1]
    return name


def _overrides(argv: Sequence[str]) -> list[str]:
    """The override arguments of ``argv`` (flags and their values removed)."""
    overrides, skip = [], False
    for argument in argv:
        if skip:
            skip = False
        elif argument in _FLAGS_WITH_VALUE:
            skip = True
        elif not argument.startswith("-"):
            overrides.append(argument)
    return overrides


def replace_whole_mappings(arguments: Sequence[str]) -> list[str]:
    """``loss.style_layers={relu1_1: 1.0}`` -> ``~loss.style_layers``, ``+loss.style_layers={relu1_1: 1.0}``.

    Hydra merges a mapping assigned to a mapping, so the default layers would stay beside the given ones (or
    the override would fail on a layer the default lacks); a layer map or callback map written whole means
    exactly that map. Other arguments are left as written."""
    rewritten = []
    for argument in arguments:
        parts = _split_override(argument)
        if parts is not None and is_open_mapping(parts[0]) and parts[1].startswith("{"):
            rewritten += [f"~{parts[0]}", f"+{argument}"]
        else:
            rewritten.append(argument)
    return rewritten


def _group_choices(config_dir: Path, group: str) -> list[str]:
    """The option names of a config group: the .yaml files in ``config_dir/group``."""
    return sorted(p.stem for p in (config_dir / group).glob("*.yaml"))


def _unknown_key_message(wanted: str, argument: str, base: DictConfig) -> str:
    """One line for an override whose key ``wanted`` (dotted) the composed config ``base`` does not have."""
    parts = wanted.split(".")
    depth = 0  # how many leading components exist as mappings
    while depth < len(parts) - 1 and isinstance(OmegaConf.select(base, ".".join(parts[:depth + 1])), DictConfig):
        depth += 1
    parent, missing = ".".join(parts[:depth]), parts[depth]
    node = OmegaConf.select(base, parent) if parent else base
    known = [str(key) for key in node.keys()]
    if is_open_mapping(parent) and depth == len(parts) - 1:
        return f"{parent} has no entry {missing!r} (it has {', '.join(known) or 'none'}); to add one, write +{argument}"
    prefix = f"{parent}." if parent else ""
    close = [prefix + key for key in difflib.get_close_matches(missing, known, n=3, cutoff=0.6)]
    if not close:  # the right name under another parent: gatys.steps -> engine.steps
        leaf = parts[-1]
        close = [key for key in _dotted_keys(base) if key.rsplit(".", 1)[-1] == leaf][:3]
    if close:
        return f"unknown setting {wanted!r}: did you mean {' or '.join(close)}?"
    return f"unknown setting {wanted!r}: the settings{f' under {parent}' if parent else ''} are {', '.join(known)}"


def _dotted_keys(node: DictConfig, prefix: str = "") -> list[str]:
    """Every key of ``node`` and its sub-mappings, dotted (``engine.loss.style_weight``)."""
    keys = []
    for key in node.keys():
        dotted = f"{prefix}{key}"
        keys.append(dotted)
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            keys += _dotted_keys(child, dotted + ".")
    return keys


def check_overrides(config_dir: Path, config_name: str, overrides: Sequence[str]) -> None:
    """Compose ``config_name`` with ``overrides`` as Hydra will; raise UserError (one line) if it fails."""
    from hydra.errors import HydraException

    try:
        compose(config_name, overrides, folder=config_dir)
    except HydraException as failure:
        raise composition_error(failure, config_dir, config_name, overrides) from None


def composition_error(failure: Exception, config_dir: Path, config_name: str, overrides: Sequence[str]) -> UserError:
    """The one-line UserError for Hydra's ``failure`` to compose ``config_name`` with ``overrides``: the
    override it names, and the fix (the group's choices, the quoting, or the nearest known key)."""
    from hydra.errors import MissingConfigException, OverrideParseException

    culprit = _culprit(failure, overrides)
    if isinstance(failure, MissingConfigException):
        group = culprit.partition("=")[0].lstrip("+~").split("@")[0]
        options = _group_choices(config_dir, group)
        return UserError(f"unknown choice {culprit!r}: {group} is one of {', '.join(options) or 'none'}")
    if isinstance(failure, OverrideParseException):
        key, _, value = culprit.partition("=")
        return UserError(f"cannot read {culprit!r} ({str(failure).splitlines()[0]}); quote a value with special "
                         f"characters: \"{key}={hydra_quoted(value)}\"")
    if "Could not override" in str(failure) or "Could not delete" in str(failure):  # ~key: replace_whole_mappings
        base = compose(config_name, [o for o in overrides if _is_group_choice(config_dir, o)], folder=config_dir)
        return UserError(_unknown_key_message(culprit.split("=", 1)[0].lstrip("~"), culprit, base))
    return UserError(f"{culprit}: " + " ".join(str(failure).split()))


def _is_group_choice(config_dir: Path, override: str) -> bool:
    """Whether ``override`` picks a config group option (``engine=gatys``, ``experiment=demo``)."""
    parts = _split_override(override)
    return parts is not None and (config_dir / parts[0].split("@")[0]).is_dir()


def _culprit(error: BaseException, overrides: Sequence[str]) -> str:
    """The override an error message names (its key or text), else the last override."""
    message = str(error)
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if f"'{key}'" in message or override in message or f"'{key}/" in message:
            return override
    return overrides[-1] if overrides else ""


def prepared_overrides(arguments: Sequence[str]) -> list[str]:
    """Command-line ``arguments`` as Hydra should read them: path values quoted, whole mappings replaced."""
    return replace_whole_mappings(quote_path_values(arguments))


def prepare_command_line(argv: Sequence[str], config_dir: Path, default_config: str) -> list[str]:
    """``sys.argv`` with path values quoted for Hydra, after checking that every override applies.

    Raises UserError for an unknown setting or choice, or an override Hydra cannot parse. Command lines
    with ``--help``, ``--multirun`` or another config tree go to Hydra as they are."""
    program, arguments = argv[0], list(argv[1:])
    if any(argument.split("=", 1)[0] in _HANDS_OFF_FLAGS for argument in arguments):
        return [program, *arguments]
    arguments = prepared_overrides(arguments)
    overrides = _overrides(arguments)
    if overrides:
        check_overrides(config_dir, _config_name(arguments, default_config), overrides)
    return [program, *arguments]
