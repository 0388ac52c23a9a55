"""temporal=flow: optical-flow smoothing of stylised frames calms sensor-noise flicker without dragging motion."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from fststyle.errors import UserError
from fststyle.io.decode import load_image
from fststyle.stylize.stylizer import Stylizer
from fststyle.stylize.temporal import TEMPORAL_MODES, FlowSmoother, temporal_smoother

WIDTH, HEIGHT, FRAMES = 64, 48, 8


@pytest.fixture(scope="module")
def stylizer() -> Stylizer:
    return Stylizer.load("starry_night", device="cpu")


@pytest.fixture(scope="module")
def photo(bundled_data: Path) -> torch.Tensor:
    """The bundled preview photo at 128 px wide, 3,H,W."""
    return load_image(bundled_data / "preview" / "000000000030.jpg", size=128)[0]


def smoothed(clip: torch.Tensor, stylised: torch.Tensor) -> torch.Tensor:
    """A fresh flow smoother run over a T,3,H,W clip and its stylised frames."""
    smoother = temporal_smoother("flow")
    return torch.stack([smoother(frame, styled) for frame, styled in zip(clip, stylised, strict=True)])


def flicker(clip: torch.Tensor) -> float:
    return (clip[1:] - clip[:-1]).abs().mean().item()


def test_flow_smoothing_calms_sensor_noise_on_a_still_scene(photo: torch.Tensor, stylizer: Stylizer) -> None:
    generator = torch.Generator().manual_seed(0)
    view = photo[:, :HEIGHT, :WIDTH]
    clip = (view + 3 / 255 * torch.randn((FRAMES, *view.shape), generator=generator)).clamp(0, 1)
    stylised = stylizer(clip)
    ratio = flicker(smoothed(clip, stylised)) / flicker(stylised)
    assert ratio < 0.5, f"flicker with smoothing is {ratio:.2f}x that without"  # measured 0.27-0.30x (3 seeds)


def test_flow_smoothing_follows_a_pan_without_ghost_trails(photo: torch.Tensor, stylizer: Stylizer) -> None:
    clip = torch.stack([photo[:, t:t + HEIGHT, 3 * t:3 * t + WIDTH] for t in range(FRAMES)])
    stylised = stylizer(clip)
    drift = (smoothed(clip, stylised) - stylised).abs().mean().item()
    # measured 0.007; a fixed blend weight with the same mask (0.55, as calm on the still scene) strays 0.042
    assert drift < 0.025, f"smoothed pan strays {drift:.3f} from the per-frame stylisation"


def test_none_mode_has_no_smoother_and_an_unknown_mode_names_the_choices() -> None:
    assert TEMPORAL_MODES == ("none", "flow")
    assert temporal_smoother("none") is None
    with pytest.raises(UserError, match="temporal='optical'.*none, flow") as error:
        temporal_smoother("optical")
    assert "\n" not in str(error.value)


def test_reset_forgets_the_previous_frame(photo: torch.Tensor) -> None:
    frame = photo[:, :HEIGHT, :WIDTH]
    first = torch.rand(3, HEIGHT, WIDTH, dtype=torch.float64)
    second = (first + 0.02 * torch.randn(first.shape, dtype=torch.float64)).clamp(0, 1)  # flicker on a still frame
    smoother = FlowSmoother()
    assert torch.equal(smoother(frame, first), first)  # the first frame of a clip passes through
    blended = smoother(frame, second)
    assert blended.dtype == torch.float64 and not torch.allclose(blended, second, atol=1e-3)
    smoother.reset()
    assert torch.equal(smoother(frame, second), second)


def test_flow_without_opencv_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cv2", None)  # as if opencv-python-headless were not installed
    with pytest.raises(UserError, match=r'pip install "fststyle\[video\]"'):
        temporal_smoother("flow")
