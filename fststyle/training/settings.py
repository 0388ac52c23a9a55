"""The settings of a training run, each group checked once, in a small dataclass, with one-line UserErrors.

``TrainingSettings.to_hparams`` gives the plain containers a checkpoint stores (read back with
``torch.load(weights_only=True)``), and ``from_hparams`` reads them back, from this project's older
checkpoints too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from fststyle.errors import UserError
from fststyle.io.files import resolved_path
from fststyle.model_header import MAX_STYLE_NAME
from fststyle.nets.transformer_config import TransformerConfig
from fststyle.training.finetune import FinetuneSettings

#: torch.compile's modes (its documentation)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

#: Adam with lr 1e-3: Johnson et al. 2016, supplementary material §"Style transfer", training details
DEFAULT_LR = 1e-3
SCHEDULES = ("none", "cosine", "step")
#: how a list of style images trains: blend (one style from their blended Gram targets) | multi (one network,
#: each image a style with its own instance-norm scale and shift, Dumoulin et al. 2017)
STYLE_MODES = ("blend", "multi")

#: what to say when a mandatory (``???``) setting is missing, by its key
_MISSING_HINTS = {
    "data.root": "pass data.root=/path/to/coco, the folder holding annotations/ and train2017/ (data/README.md "
                 "says how to download MS-COCO), or try experiment=demo, which trains on the bundled sample offline",
}


def plain_config(cfg: Mapping[str, Any] | DictConfig) -> dict[str, Any]:
    """The config as plain, resolved Python containers; a missing mandatory value is a UserError naming it."""
    if isinstance(cfg, DictConfig):
        try:
            return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
        except MissingMandatoryValue as error:
            key = error.full_key
            raise UserError(f"{key} is not set: {_MISSING_HINTS.get(key, f'pass {key}=<value>')}") from None
    return dict(cfg)


@dataclass(frozen=True)
class OptimizerSettings:
    """Adam on the transformer, its learning-rate schedule and the gradient guards (``optimizer`` in train.yaml).

    ``schedule``: none | cosine (to ``min_lr`` over trainer.max_steps) | step (x ``gamma`` every ``step_size``
    steps); ``adaptive_clip``: 0 (off) or a multiple (>= 1) of the running gradient norm to clip to;
    ``bound_gradient_floor``: the smallest slope the output's tanh bound passes back, 0 to 0.5.
    """

    lr: float = DEFAULT_LR
    schedule: str = "none"
    min_lr: float = 0.0
    step_size: int | None = None
    gamma: float = 0.1
    adaptive_clip: float = 0.0
    bound_gradient_floor: float = 0.0

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise UserError(f"optimizer.schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.schedule == "step" and (self.step_size is None or self.step_size < 1):
            raise UserError(f"optimizer.schedule=step needs optimizer.step_size >= 1 (steps between decays), "
                            f"got {self.step_size}")
        if self.adaptive_clip < 0 or 0 < self.adaptive_clip < 1:
            raise UserError(f"optimizer.adaptive_clip must be 0 (off) or at least 1 (a multiple of the running "
                            f"gradient norm), got {self.adaptive_clip}; e.g. optimizer.adaptive_clip=2")
        if not 0 <= self.bound_gradient_floor <= 0.5:
            raise UserError(f"optimizer.bound_gradient_floor must be from 0 (off) to 0.5 (the bound's steepest "
                            f"slope), got {self.bound_gradient_floor}")

    @classmethod
    def from_config(cls, optimizer: Mapping[str, Any] | None) -> OptimizerSettings:
        """From the ``optimizer`` mapping; a key that is no setting is a UserError naming the settings."""
        return cls(**_known_keys(cls, "optimizer", optimizer or {}))


@dataclass(frozen=True)
class NetworkSettings:
    """How the transformer and the VGG run (``networks`` in train.yaml): NHWC memory format, ``torch.compile``."""

    channels_last: bool = False
    compile: bool = False
    #: torch.compile's mode when ``compile``: reduce-overhead replays the forward and backward of each fixed
    #: batch shape from CUDA graphs (on a GPU), so a small step is not bound by kernel launches
    compile_mode: str = "default"

    def __post_init__(self) -> None:
        if self.compile_mode not in COMPILE_MODES:
            raise UserError(f"networks.compile_mode must be one of {COMPILE_MODES}, got {self.compile_mode!r}")


@dataclass(frozen=True)
class StyleSettings:
    """The style image(s) of a run: ``paths``, read with their longer side resized to ``size`` (None: as is).

    Without ``names`` the images' Gram targets blend (weights ``blend``, None: equal) into one style called
    ``name``; with ``names`` (one per path) each image is a style of its own in one network (``name`` is then
    every style's name, a fine-tune's frozen ones first, joined by ``+``).
    """

    name: str
    paths: tuple[str, ...]
    blend: tuple[float, ...] | None = None
    size: int | None = None
    names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.names is None:
            return
        if len(self.names) != len(self.paths):
            raise UserError(f"style_names= has {len(self.names)} names for {len(self.paths)} style images; give "
                            "one per image")
        for index, name in enumerate(self.names):
            # the model file's check (model_header.MAX_STYLE_NAME), and the exported file is named after the styles
            if not 0 < len(name) <= MAX_STYLE_NAME or "/" in name or "\\" in name:
                raise UserError(f"style_names= {name!r} is not a style name: give 1 to {MAX_STYLE_NAME} characters "
                                "without / or \\ (the model file is named after its styles)")
            if name in self.names[:index]:
                raise UserError(f"two style images share the style name {name!r}; name the new styles with "
                                "style_names='[...]'")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], finetune: FinetuneSettings | None = None) -> StyleSettings:
        """From train.yaml's ``style``, ``style_blend``, ``style_size``, ``style_mode`` and ``style_names`` keys
        (style paths resolved and checked); ``finetune``: the trained model these styles are added to."""
        paths = cfg["style"] if isinstance(cfg["style"], list | tuple) else [cfg["style"]]
        if not paths or paths == [None]:
            raise UserError("no style image: set style=path/to/painting.jpg (e.g. data/styles/starry_night.jpg)")
        paths = tuple(str(resolved_path(p, "style image")) for p in paths)
        mode = cfg.get("style_mode") or "blend"
        if mode not in STYLE_MODES:
            raise UserError(f"style_mode={mode!r} is not a mode; use one of {', '.join(STYLE_MODES)}")
        blend = None if cfg.get("style_blend") is None else tuple(cfg["style_blend"])
        names = cfg.get("style_names")
        name = style_name(paths)
        if mode == "blend" and finetune is None:
            if names is not None:
                raise UserError("style_names= names the styles of style_mode=multi (or of finetune_from=); "
                                "a blend is one style, named after its images")
            return cls(name, paths, blend, cfg.get("style_size"))
        if blend is not None:
            raise UserError("style_blend= blends the Gram targets of one style; styles learned apart blend at "
                            "inference instead: fststyle stylize ... 'style={a: 0.5, b: 0.5}'")
        if isinstance(names, str):  # style_names=painting: the one name of one style image
            names = [names]
        names = tuple(str(n) for n in names) if names is not None else tuple(Path(p).stem for p in paths)
        taken = finetune.style_names if finetune is not None else []
        style = cls("+".join([*taken, *names]), paths, None, cfg.get("style_size"), names)
        for new in names:
            if new in taken:
                raise UserError(f"finetune_from={finetune.source} already holds the style name {new!r}; name the "
                                "new styles with style_names='[...]'")
        return style

    @property
    def trained_names(self) -> list[str]:
        """The names of the styles a run trains: each of ``names``, or the one ``name``."""
        return list(self.names) if self.names else [self.name]

    def to_hparams(self) -> dict[str, Any]:
        """The plain ``style`` hyper-parameter (``names`` only for styles learned apart, as checkpoints had it)."""
        style = {"name": self.name, "paths": list(self.paths), "blend": None if self.blend is None else list(self.blend),
                 "size": self.size}
        return style if self.names is None else {**style, "names": list(self.names)}

    @classmethod
    def from_hparams(cls, style: Mapping[str, Any]) -> StyleSettings:
        """From a checkpoint's ``style`` hyper-parameter."""
        names = style.get("names")
        return cls(style["name"], tuple(style["paths"]), None if style.get("blend") is None else tuple(style["blend"]),
                   style.get("size"), tuple(names) if names else None)


@dataclass(frozen=True)
class TrainingSettings:
    """What a training module is built from and its checkpoints record: the network's architecture (its
    ``styles``: a fine-tune's frozen ones, then the trained ones), the loss config (the mapping
    ``PerceptualLoss.from_config`` takes), the style, the side of the square training crops, the optimiser,
    how the networks run, and the model a fine-tune starts from."""

    transformer: TransformerConfig
    loss: dict[str, Any]
    style: StyleSettings
    image_size: int
    optimizer: OptimizerSettings = OptimizerSettings()
    networks: NetworkSettings = NetworkSettings()
    finetune: FinetuneSettings | None = None

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], finetune: FinetuneSettings | None = None,
                    transformer: Mapping[str, Any] | None = None) -> TrainingSettings:
        """From the composed train.yaml as plain containers; ``transformer``: the architecture of the model a
        fine-tune starts from, which replaces the transformer group's."""
        style = StyleSettings.from_config(cfg, finetune)
        frozen = len(finetune.styles) if finetune is not None else 0
        architecture = {**(transformer or cfg["transformer"]), "styles": frozen + len(style.trained_names)}
        return cls(TransformerConfig(**architecture), dict(cfg["loss"]), style, int(cfg["data"]["image_size"]),
                   OptimizerSettings.from_config(cfg.get("optimizer")),
                   NetworkSettings(**_known_keys(NetworkSettings, "networks", cfg.get("networks") or {})), finetune)

    @property
    def frozen_styles(self) -> int:
        """How many of the network's styles a fine-tune keeps frozen (0: none)."""
        return len(self.finetune.styles) if self.finetune is not None else 0

    @property
    def network_style_names(self) -> list[str]:
        """The names of the network's styles, in order (a fine-tune's frozen ones first)."""
        frozen = self.finetune.style_names if self.finetune is not None else []
        return [*frozen, *self.style.trained_names]

    def to_hparams(self) -> dict[str, Any]:
        """The plain containers a checkpoint stores as hyper-parameters (and ``training_metadata`` reads)."""
        return {"transformer": self.transformer.to_dict(), "loss": self.loss, "style": self.style.to_hparams(),
                "image_size": self.image_size, "optimizer": dataclasses.asdict(self.optimizer),
                "channels_last": self.networks.channels_last, "compile": self.networks.compile,
                "compile_mode": self.networks.compile_mode,
                "finetune": None if self.finetune is None else self.finetune.to_hparams()}

    @classmethod
    def from_hparams(cls, hparams: Mapping[str, Any]) -> TrainingSettings:
        """From a checkpoint's hyper-parameters, this project's older ones too (settings they lack: defaults)."""
        return cls(TransformerConfig(**hparams["transformer"]), dict(hparams["loss"]),
                   StyleSettings.from_hparams(hparams["style"]), int(hparams["image_size"]),
                   OptimizerSettings.from_config(hparams.get("optimizer")),
                   NetworkSettings(bool(hparams.get("channels_last", False)), bool(hparams.get("compile", False)),
                                   str(hparams.get("compile_mode", "default"))),
                   FinetuneSettings.from_hparams(hparams.get("finetune")))


def style_name(paths: Sequence[str]) -> str:
    """A model name from its style images' file names: ``starry_night`` or ``starry_night+udnie``."""
    return "+".join(Path(p).stem for p in paths)


def _known_keys(settings: type, group: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` as keyword arguments of the dataclass ``settings``; a key it lacks is a UserError."""
    fields = [field.name for field in dataclasses.fields(settings)]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise UserError(f"{group}.{unknown[0]} is not a setting; {group} takes {', '.join(fields)}")
    return dict(values)
