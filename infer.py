"""The command line of fststyle 0.1, kept for the scripts that use it: ``fststyle stylize|optimize|compare|
export`` is the same job with paths as ordinary arguments (``fststyle --help``).

    python infer.py model=checkpoints/starry_night.safetensors input=photo.jpg output=out.jpg   # fststyle stylize
    python infer.py engine=gatys content=photo.jpg style=starry.jpg output=out.png              # fststyle optimize
    python infer.py --config-name compare model=... input=photos/ output=cmp/                  # fststyle compare
    python infer.py model=... export=onnx output=model.onnx                                    # fststyle export

Exit status: 0 done, 1 some inputs failed, 2 a user error (one line naming the fix).
"""

import sys

from fststyle.cli.main import main


def command(arguments: list[str]) -> list[str]:
    """The ``fststyle`` command line that an ``infer.py`` command line stands for."""
    for flag in ("--config-name", "-cn"):
        if flag in arguments[:-1] and arguments[arguments.index(flag) + 1] == "compare":
            at = arguments.index(flag)
            return ["compare", *arguments[:at], *arguments[at + 2:]]
    if "--config-name=compare" in arguments:
        return ["compare", *(a for a in arguments if a != "--config-name=compare")]
    if any(a in ("engine=gatys", "engine=mrf") for a in arguments):  # content= is optimize's input=
        return ["optimize", *("input=" + a[len("content="):] if a.startswith("content=") else a for a in arguments)]
    exports = [a for a in arguments if a.startswith("export=")]
    if exports:  # export=onnx is export's format=onnx
        return ["export", *("format=" + a[len("export="):] if a in exports else a for a in arguments)]
    return ["stylize", *(a for a in arguments if a != "engine=fast")]


if __name__ == "__main__":
    main(command(sys.argv[1:]))
