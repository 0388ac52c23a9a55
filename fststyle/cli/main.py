"""``fststyle <command>``: one command per job, paths as ordinary arguments, settings as Hydra overrides.

    fststyle stylize "my photo (1).jpg" --model starry_night -o out/ strength=0.7
    fststyle train experiment=demo
    fststyle models

An argument that names an existing file or folder is a path; one of the form ``key=value`` is a setting
(Hydra's override syntax, checked against the job's config: an unknown key is one line that names the nearest
one); anything else is a path that does not exist yet, reported as such. Exit statuses: 0 done, 1 some
inputs failed, 2 a user error.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fststyle.cli import command_line, run_job, user_errors_exit
from fststyle.cli.arguments import composition_error, hydra_quoted, prepared_overrides
from fststyle.errors import UserError

if TYPE_CHECKING:
    from omegaconf import DictConfig

#: ``key=value``, ``+key=value``, ``~key``, ``group@pkg=option``: Hydra's override forms
_OVERRIDE = re.compile(r"^(\+\+|\+|~)?[A-Za-z_][\w.@/-]*(=|$)")
#: the command of this process tree: Lightning starts the other DDP ranks by re-running the command line Hydra
#: saw, which has no command word, so ``launch`` leaves the command here for them
COMMAND_ENV = "FSTSTYLE_COMMAND"


@dataclass(frozen=True)
class Command:
    """One subcommand: what it does, the name of its positional paths, and which path options it takes."""

    summary: str
    positional: str | None = None      # the setting the positional paths fill (input, model)
    single: bool = False               # exactly one positional path
    options: tuple[str, ...] = ()      # of: model, models (repeatable -m), style, output
    flags: tuple[str, ...] = ()        # --NAME VALUE settings (serve: host, port); and --allow-remote


COMMANDS = {
    "train": Command("train a fast style network for one style (Johnson et al. 2016); experiment=demo runs offline"),
    "stylize": Command("stylise photos and folders with a trained style model", "input", options=("model", "output")),
    "optimize": Command("optimise one photo towards a style directly (engine=gatys | mrf), the slow reference",
                        "input", single=True, options=("style", "output")),
    "compare": Command("run the fast model and the optimisation engines on the same photos, scored by one loss",
                       "input", options=("model", "style", "output")),
    "export": Command("write a style model as ONNX, TorchScript, Core ML, LiteRT or ExecuTorch (the output's suffix "
                      "chooses), or a training .ckpt as a style model",
                      "model", single=True, options=("output",)),
    "serve": Command("a local web page: photos, style blends, the webcam, fast against slow (the serve extra)",
                     options=("models",), flags=("host", "port")),
    "models": Command("list the shipped style models"),
}
FLAGS = {"model": "-m", "models": "-m", "style": "-s", "output": "-o"}
OPTION_HELP = {
    "model": "a shipped model's name (fststyle models) or a .safetensors style model",
    "models": "a model to serve besides the shipped ones: a name or a .safetensors file (repeat for several)",
    "style": "a style image (repeat for several)",
    "output": "the output file or folder (never one of the inputs)",
}
EXAMPLES = {
    "train": "fststyle train experiment=demo\n"
             "fststyle train data.root=/data/coco style=painting.jpg trainer=gpu\n"
             "fststyle train ... ckpt_path=outputs/<date>/<time>        # resume a run",
    "stylize": 'fststyle stylize "my photo (1).jpg" --model starry_night -o out/ strength=0.7\n'
               "fststyle stylize photos/ --model the_scream -o stylised/ tile=1024",
    "optimize": "fststyle optimize photo.jpg --style painting.jpg -o out.png\n"
                "fststyle optimize photo.jpg --style painting.jpg -o out.png engine=mrf engine.steps=50",
    "compare": "fststyle compare photos/ --model starry_night -o compare_out/ engines='[fast,gatys]'",
    "export": "fststyle export starry_night -o starry_night.onnx\n"
              "fststyle export starry_night -o starry_night.tflite quantize=fp16   # pip install \"fststyle[litert]\"\n"
              "fststyle export multistyle -o multistyle.pte quantize=int8         # pip install \"fststyle[executorch]\"\n"
              "fststyle export outputs/<date>/<time>/checkpoints/last.ckpt format=safetensors",
    "serve": "fststyle serve                                  # http://127.0.0.1:8000, the shipped models\n"
             "fststyle serve -m my_style.safetensors -m multistyle --port 9000",
    "models": "fststyle models",
}


def _parser(name: str, command: Command) -> argparse.ArgumentParser:
    paths = {None: "", "input": "INPUT" if command.single else "INPUT...", "model": "MODEL"}[command.positional]
    flags = "".join(f" [{FLAGS[option]} {'MODEL' if option == 'models' else option.upper()}]"
                    for option in command.options)
    flags += "".join(f" [--{flag} {flag.upper()}]" for flag in command.flags)
    flags += " [--allow-remote]" if command.flags else ""
    usage = f"fststyle {name} {paths}{flags} [KEY=VALUE ...]".replace("  ", " ")
    parser = argparse.ArgumentParser(prog=f"fststyle {name}", usage=usage, description=command.summary,
                                     add_help=False, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-h", "--help", action="store_true", help="this help, with every setting of the job")
    parser.add_argument("arguments", nargs="*", help=argparse.SUPPRESS)
    if "model" in command.options:
        parser.add_argument(FLAGS["model"], "--model", help=OPTION_HELP["model"])
    if "models" in command.options:
        parser.add_argument(FLAGS["models"], "--model", dest="models", metavar="MODEL", action="append",
                            help=OPTION_HELP["models"])
    for flag in command.flags:
        parser.add_argument(f"--{flag}", help=f"the {flag} setting ({flag}=...)")
    if command.flags:
        parser.add_argument("--allow-remote", action="store_true", help="allow a host other machines can reach")
    if "style" in command.options:
        parser.add_argument(FLAGS["style"], "--style", action="append", help=OPTION_HELP["style"])
    if "output" in command.options:
        parser.add_argument(FLAGS["output"], "--output", help=OPTION_HELP["output"])
    if name != "models":
        parser.add_argument("--cfg", choices=("job", "hydra", "all"), help="print the composed config and exit (Hydra)")
        parser.add_argument("--resolve", action="store_true", help="with --cfg: resolve interpolations")
    if name == "train":
        parser.add_argument("--multirun", action="store_true", help="a Hydra sweep: one run per combination")
    return parser


def _split(arguments: Sequence[str], command: Command) -> tuple[list[str], list[str]]:
    """(paths, overrides): an existing path is a path, ``key=value`` a setting, anything else a path."""
    paths, overrides = [], []
    for argument in arguments:
        if command.positional is not None and Path(argument).exists():
            paths.append(argument)
        elif _OVERRIDE.match(argument) and ("=" in argument or argument.startswith("~")):
            overrides.append(argument)
        else:
            paths.append(argument)
    return paths, overrides


def _path_override(key: str, values: Sequence[str]) -> str:
    """``key='a b.jpg'`` or ``key=['a.jpg','b.jpg']``, quoted so that any file name survives Hydra's parser."""
    if len(values) == 1:
        return f"{key}={hydra_quoted(values[0])}"
    return f"{key}=[{','.join(hydra_quoted(value) for value in values)}]"


def job_overrides(name: str, command: Command, options: argparse.Namespace) -> list[str]:
    """The Hydra overrides a parsed command line stands for (paths and path options first, then settings)."""
    paths, settings = _split(options.arguments, command)
    given = {setting.split("=", 1)[0].lstrip("+") for setting in settings}
    overrides: list[str] = []
    if paths:
        if command.positional is None:
            raise UserError(f"fststyle {name} takes no paths, got {paths[0]!r}; settings are key=value "
                            f"(fststyle {name} --help lists them)")
        if command.single and len(paths) > 1:
            raise UserError(f"fststyle {name} takes one {command.positional}, got {len(paths)}: "
                            f"{', '.join(map(repr, paths))}")
        if command.positional in given:
            raise UserError(f"{command.positional} given twice: as a path and as {command.positional}=; keep one")
        overrides.append(_path_override(command.positional, paths))
    for option in (*command.options, *command.flags):
        value = getattr(options, option)
        if value is None:
            continue
        setting = "model" if option == "models" else option
        if setting in given:
            raise UserError(f"{setting} given twice: as --{option} and as {setting}=; keep one")
        if option == "models":  # a list even for one model
            overrides.append(f"{setting}=[{','.join(hydra_quoted(v) for v in value)}]")
        elif option in command.flags:
            overrides.append(f"{setting}={hydra_quoted(value) if option == 'host' else value}")
        else:
            overrides.append(_path_override(setting, value if isinstance(value, list) else [value]))
    if getattr(options, "allow_remote", False):
        overrides.append("allow_remote=true")
    return overrides + settings


def _help(name: str, command: Command, parser: argparse.ArgumentParser, overrides: Sequence[str]) -> str:
    """The command's usage, options, examples and every setting with its default and description."""
    lines = [parser.format_help().rstrip(), "", "examples:", textwrap.indent(EXAMPLES[name], "  ")]
    if name != "models":
        from fststyle.cli.config import setting_descriptions

        group_choices = [o for o in overrides if "=" in o and "." not in o.split("=", 1)[0]]
        settings = setting_descriptions(name, group_choices)
        width = min(max(len(f"{key}={value}") for key, value, _ in settings), 44)
        lines += ["", "settings (key=value after the paths; defaults shown):"]
        for key, value, description in settings:
            setting = f"{key}={value}"
            gap = "\n" + " " * (width + 4) if len(setting) > width else " " * (width - len(setting) + 2)
            lines.append(f"  {setting}{gap}{description}")
    return "\n".join(lines)


def _top_level_help() -> str:
    width = max(map(len, COMMANDS))
    commands = "\n".join(f"  {name.ljust(width)}  {command.summary}" for name, command in COMMANDS.items())
    return (f"usage: fststyle COMMAND [PATH ...] [OPTIONS] [KEY=VALUE ...]\n\n"
            f"Fast neural style transfer: train style networks, stylise photos, optimise, compare.\n\n"
            f"commands:\n{commands}\n\nfststyle COMMAND --help lists the command's options and every setting.")


def launch(name: str, overrides: Sequence[str], flags: Sequence[str] = ()) -> None:
    """Compose conf/<name>.yaml with ``overrides`` through Hydra and run the job; exits with its status.

    A plain run composes the config once and hands it to the job as ``hydra.main`` would (run directory,
    logging, ``.hydra/``). ``--cfg``, ``--resolve`` and ``--multirun`` go through ``hydra.main`` itself."""
    from fststyle.bundled import config_dir
    from fststyle.cli.config import register_resolvers
    from fststyle.cli.jobs import CONFIG_JOBS

    register_resolvers()
    folder = config_dir()
    job = CONFIG_JOBS[name]
    os.environ[COMMAND_ENV] = name
    program = sys.argv[0]
    if flags:
        import hydra

        @hydra.main(version_base="1.3", config_path=str(folder), config_name=name)
        def run(cfg):
            run_job(lambda: job(cfg))

        sys.argv = command_line([program, *flags, *overrides], folder, name)
        run()
        return
    with user_errors_exit():
        overrides = prepared_overrides(overrides)
    sys.argv = [program, *overrides]  # what Lightning re-runs for the other DDP ranks (see COMMAND_ENV)
    run_composed_once(folder, name, overrides, lambda cfg: run_job(lambda: job(cfg)))


def run_composed_once(folder: Path, name: str, overrides: Sequence[str], task: Callable[[DictConfig], None]) -> None:
    """Compose ``folder``/<name>.yaml with ``overrides`` once and run ``task`` on it the way ``hydra.main`` runs
    its function (Hydra 1.3's ``Hydra.run``), which would compose it twice more (once for ``hydra.mode``).

    A composition error exits 2 with one line that names the override (cli.arguments.composition_error)."""
    from hydra import version
    from hydra._internal.callbacks import Callbacks
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.utils import run_job as run_hydra_job
    from hydra.errors import HydraException
    from hydra.types import HydraContext, RunMode

    version.setbase("1.3")
    GlobalHydra.instance().clear()
    # "main": the job name hydra.main gave every run (its log file is <run dir>/main.log)
    hydra = Hydra.create_main_hydra2(task_name="main", config_search_path=create_config_search_path(f"file://{folder}"))
    try:
        with user_errors_exit():
            try:
                cfg = hydra.compose_config(config_name=name, overrides=list(overrides), with_log_configuration=True,
                                           run_mode=RunMode.RUN)
            except HydraException as failure:
                raise composition_error(failure, folder, name, overrides) from None
        cfg.hydra.mode = RunMode.RUN
        callbacks = Callbacks(cfg)
        callbacks.on_run_start(config=cfg, config_name=name)
        result = run_hydra_job(hydra_context=HydraContext(config_loader=hydra.config_loader, callbacks=callbacks),
                               task_function=task, config=cfg, job_dir_key="hydra.run.dir", job_subdir_key=None)
        callbacks.on_run_end(config=cfg, config_name=name, job_return=result)
        _ = result.return_value  # re-raises what the task raised
    finally:
        GlobalHydra.instance().clear()


def main(argv: Sequence[str] | None = None) -> None:
    """The ``fststyle`` console script (also ``python -m fststyle``)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments and arguments[0] not in COMMANDS and os.environ.get(COMMAND_ENV) in COMMANDS \
            and _OVERRIDE.match(arguments[0]):  # a DDP rank that Lightning started (see COMMAND_ENV)
        arguments.insert(0, os.environ[COMMAND_ENV])
    if not arguments or arguments[0] in ("-h", "--help"):
        print(_top_level_help())
        raise SystemExit(0 if arguments else 2)
    name, rest = arguments[0], arguments[1:]
    if name not in COMMANDS:
        with user_errors_exit():
            import difflib

            close = difflib.get_close_matches(name, COMMANDS, n=1)
            raise UserError(f"unknown command {name!r}: " + (f"did you mean {close[0]}? " if close else "")
                            + f"the commands are {', '.join(COMMANDS)}")
    command = COMMANDS[name]
    parser = _parser(name, command)
    with user_errors_exit():
        options, unknown = parser.parse_known_intermixed_args(rest)
        if unknown:
            raise UserError(f"fststyle {name}: unknown option {unknown[0]!r} (fststyle {name} --help lists them)")
        overrides = job_overrides(name, command, options)
        if options.help:
            print(_help(name, command, parser, overrides))
            raise SystemExit(0)
    if name == "models":
        from fststyle.cli.jobs import models

        run_job(models)
        return
    flags = [*(["--cfg", options.cfg] if options.cfg else []), *(["--resolve"] if options.resolve else []),
             *(["--multirun"] if getattr(options, "multirun", False) else [])]
    launch(name, overrides, flags)
