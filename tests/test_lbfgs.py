"""DeviceLBFGS against torch.optim.LBFGS (the same algorithm without a line search), and the engine's use of it."""

import pytest
import torch

from fststyle.losses import PerceptualLoss
from fststyle.optimize.engine import lbfgs_iterations, optimize_image
from fststyle.optimize.lbfgs import DeviceLBFGS
from fststyle.optimize.settings import OptimizeSettings


def _quartic(x: torch.Tensor) -> torch.Tensor:
    """A smooth convex problem: a random quadratic plus a quartic, over 50 values."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(50, 50, generator=generator)
    b = torch.randn(50, generator=generator)
    return 0.5 * x @ (a @ a.T / 50 + 0.1 * torch.eye(50)) @ x - b @ x + 0.1 * (x**4).sum()


def _wavy(x: torch.Tensor) -> torch.Tensor:
    """A non-convex problem whose steps sometimes fail the curvature test."""
    return torch.sin(0.5 * x).sum() + 0.1 * (x**2).sum()


def _torch_lbfgs(function, start: torch.Tensor, iterations: int, history_size: int, lr: float = 1.0) -> torch.Tensor:
    x = start.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([x], lr=lr, max_iter=iterations, history_size=history_size,
                                  tolerance_grad=0.0, tolerance_change=0.0)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        value = function(x)
        value.backward()
        return value

    optimizer.step(closure)
    return x.detach()


def _device_lbfgs(function, start: torch.Tensor, iterations: int, history_size: int,
                  full_history: bool = False) -> tuple[torch.Tensor, DeviceLBFGS]:
    x = start.clone().requires_grad_(True)
    optimizer = DeviceLBFGS(x, history_size=history_size, tolerance_grad=0.0, tolerance_change=0.0)
    x.grad = torch.zeros_like(x)
    for _ in range(iterations):
        x.grad.zero_()
        value = function(x)
        value.backward()
        optimizer.step(value, full_history=full_history)
    return x.detach(), optimizer


@pytest.mark.parametrize("history_size", [100, 5])  # 5: the ring wraps many times
@pytest.mark.parametrize("full_history", [False, True])
def test_the_same_iterates_as_torch_lbfgs(history_size, full_history):
    start = torch.randn(50, generator=torch.Generator().manual_seed(1))
    # 20 iterations reach the float32 floor of this loss; after it, trials that differ by rounding are rejected
    expected = _torch_lbfgs(_quartic, start, 20, history_size)
    reached, optimizer = _device_lbfgs(_quartic, start, 20, history_size, full_history)
    assert bool(optimizer.accepted)
    torch.testing.assert_close(reached, expected, rtol=1e-5, atol=1e-5)
    assert _quartic(reached) < _quartic(start) - 1


def test_pairs_failing_the_curvature_test_are_skipped_as_torch_skips_them():
    start = 2 * torch.randn(40, generator=torch.Generator().manual_seed(5))
    expected = _torch_lbfgs(_wavy, start, 12, 10)
    reached, optimizer = _device_lbfgs(_wavy, start, 12, 10)
    assert int(optimizer.pairs_kept) < 11, "this problem must make the curvature test refuse some pairs"
    assert bool(optimizer.accepted)
    torch.testing.assert_close(reached, expected, rtol=1e-5, atol=1e-5)
    assert _wavy(reached) < _wavy(start) - 10


def test_a_zero_gradient_stops_it_and_leaves_x_alone():
    start = torch.zeros(10)
    reached, optimizer = _device_lbfgs(lambda x: (x**2).sum(), start, 5, 10)
    assert torch.equal(reached, start)
    assert not bool(optimizer.running)


@pytest.fixture
def gram_loss(random_vgg_loss) -> PerceptualLoss:
    """A Gram loss on random VGG-16 weights, weighted so its curvature passes torch's absolute 1e-10 test."""
    return PerceptualLoss.from_config(random_vgg_loss("vgg16", {"relu2_2": 1.0}, {"relu1_2": 1.0, "relu2_2": 1.0},
                                                      style_weight=1e4))


def test_the_engine_records_each_point_it_reached(gram_loss):
    """History rows read in batches after the run equal the loss at the point each iteration reached."""
    content = torch.rand(1, 3, 40, 48, generator=torch.Generator().manual_seed(0))
    style = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    seen = []
    settings = OptimizeSettings(steps=30, image_size=48)
    result = optimize_image(content, [style], gram_loss, settings, progress=False,
                            callback=lambda step, image, terms: seen.append((step, terms["total"])))
    assert [row["step"] for row in result.history] == list(range(31))
    assert result.evaluations == 31
    assert seen == [(row["step"], row["total"]) for row in result.history]
    assert result.history[-1]["total"] == pytest.approx(result.final_terms["total"], rel=1e-4)
    assert result.final_terms["total"] < result.history[0]["total"] / 2
    quiet = optimize_image(content, [style], gram_loss, settings, progress=False)  # read every 25 steps
    assert quiet.history == result.history


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_iterations_never_sync_and_follow_the_eager_ones(gram_loss):
    content = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)).cuda()
    loss = gram_loss.cuda()
    loss.set_content(content)
    loss.set_style([torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1)).cuda()])
    reached = {}
    for graphed in (False, True):
        x = content.clone().requires_grad_(True)
        first, next_step, _ = lbfgs_iterations(x, loss, OptimizeSettings(steps=20, cuda_graph=graphed))
        first()
        for _ in range(5):  # the warm-up and the capture
            next_step()
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error" if graphed else "default")  # eager reads the ring position
        try:
            for _ in range(15):
                next_step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
        reached[graphed] = x.detach().clone()
    torch.testing.assert_close(reached[True], reached[False], rtol=1e-3, atol=1e-3)


def test_a_trial_that_raises_the_loss_is_rejected_and_the_step_shortened():
    """lr=4 overshoots this problem: torch's fixed step diverges (to NaN); here every accepted point is lower."""
    start = torch.randn(50, generator=torch.Generator().manual_seed(2))
    assert not _quartic(_torch_lbfgs(_quartic, start, 20, 10, lr=4.0)) < _quartic(start)
    x = start.clone().requires_grad_(True)
    optimizer = DeviceLBFGS(x, lr=4.0, history_size=10, tolerance_grad=0.0, tolerance_change=0.0)
    x.grad = torch.zeros_like(x)
    accepted_losses, rejected = [], 0
    for _ in range(20):
        x.grad.zero_()
        value = _quartic(x)
        value.backward()
        optimizer.step(value)
        rejected += not bool(optimizer.accepted)
        accepted_losses.append(float(optimizer.accepted_loss))
    optimizer.settle()
    assert rejected > 0
    assert accepted_losses == sorted(accepted_losses, reverse=True)
    assert float(_quartic(x.detach())) == pytest.approx(accepted_losses[-1])
    assert accepted_losses[-1] < float(_quartic(start)) - 1
