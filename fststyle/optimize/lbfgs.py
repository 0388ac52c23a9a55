"""An L-BFGS whose whole state lives on the image's device, so an iteration never waits for the host.

The algorithm is ``torch.optim.LBFGS``'s (Nocedal & Wright, "Numerical Optimization", 2006, Algorithm 7.4: the
two-loop recursion; a first step of ``min(1, 1/|g|_1) * lr`` and ``lr`` after it, as neural-style's fixed-step
``optim.lbfgs`` runs Gatys et al. 2016), with a line search that fits a fixed sequence of kernels: each trial
point is evaluated once, and a trial that fails the Armijo test of sufficient decrease is rejected at the next
call, which goes back to the last accepted point and tries the same direction with a shorter step (the minimum
of the quadratic through the two losses and the slope, within [0.1, 0.5] of the step: Nocedal & Wright §3.5).
While every trial is accepted, the iterates are torch's without a line search.

torch's loop decides on the host: it reads ``float(loss)``, its curvature test ``ys > 1e-10`` and its stop tests,
and passes 0-dim tensors as ``alpha``, each a sync. Here the (s, y) history is a preallocated ring of
``history_size`` rows, and the Armijo test, the curvature test and the stop tests are ``torch.where`` on the
device; a stopped optimiser leaves its point unchanged. So one iteration (zero grad, loss, backward, ``step``) is
a fixed sequence of kernels, which the engine captures in a CUDA graph. Outside a graph, ``step`` reads the ring's
position once per call (a sync that costs nothing on the CPU) so that its rows are views, not gathered copies.
"""

from __future__ import annotations

from typing import Any

import torch

#: torch.optim.LBFGS keeps a (step, gradient change) pair only when their dot product exceeds this
CURVATURE_THRESHOLD = 1e-10
#: Armijo's c1: a trial is accepted when its loss is at most the accepted loss + c1 * step * slope (torch's
#: strong-Wolfe line search uses the same 1e-4; Nocedal & Wright §3.1)
SUFFICIENT_DECREASE = 1e-4
#: the shortened step after a rejected trial stays within these fractions of the rejected one (§3.5)
BACKTRACK_RANGE = (0.1, 0.5)


class DeviceLBFGS:
    """Minimises a loss over one tensor ``x`` (any shape, float32) from the gradient left in ``x.grad``."""

    def __init__(self, x: torch.Tensor, lr: float = 1.0, history_size: int = 100, tolerance_grad: float = 1e-7,
                 tolerance_change: float = 1e-9) -> None:
        if history_size < 1:
            raise ValueError(f"history_size must be >= 1, got {history_size}")
        self.x, self.lr, self.history_size = x, float(lr), history_size
        self.tolerance_grad, self.tolerance_change = float(tolerance_grad), float(tolerance_change)
        size, options = x.numel(), {"device": x.device, "dtype": torch.float32}
        self.steps = torch.zeros(history_size, size, **options)  # s_i = x_{i+1} - x_i, a ring of rows
        self.gradient_changes = torch.zeros(history_size, size, **options)  # y_i = g_{i+1} - g_i
        self.inverse_curvatures = torch.zeros(history_size, **options)  # rho_i = 1 / y_i.s_i; 0 = empty slot
        self.pairs_kept = torch.zeros((), dtype=torch.long, device=x.device)  # the ring's write position
        self.hessian_scale = torch.ones((), **options)  # gamma = s.y / y.y of the newest pair (H_0 = gamma I)
        # the last accepted point, its loss and gradient; the direction and step of the pending trial
        self.accepted_point = torch.zeros(size, **options)
        self.accepted_loss = torch.zeros((), **options)
        self.accepted_gradient = torch.zeros(size, **options)
        self.direction = torch.zeros(size, **options)
        self.step_length = torch.zeros((), **options)
        self.accepted = torch.ones((), dtype=torch.bool, device=x.device)  # was the last trial accepted
        self.running = torch.ones((), dtype=torch.bool, device=x.device)
        self.ring_offsets = torch.arange(history_size, device=x.device)
        self.iterations = 0

    @torch.no_grad()
    def step(self, loss: torch.Tensor, full_history: bool = False) -> None:
        """Judge the trial at ``x`` by its ``loss`` (0-dim) and ``x.grad``, then move ``x`` to the next trial.

        ``full_history`` walks all ``history_size`` slots (empty ones are exact no-ops) and finds them on the
        device, so every call runs the same kernels and never syncs (a CUDA graph); without it the ring position
        is read once per call and only the kept pairs are walked."""
        point, gradient = self.x.detach().reshape(-1), self.x.grad.reshape(-1).float()
        loss = loss.detach().float()
        if self.iterations == 0:
            accepted = self.running.clone()
            direction = gradient.neg()
            step_length = (1.0 / gradient.abs().sum()).clamp(max=1.0) * self.lr
        else:
            slope = self.accepted_gradient.dot(self.direction)
            accepted = self.running & torch.isfinite(loss) & (
                loss <= self.accepted_loss + SUFFICIENT_DECREASE * self.step_length * slope)
            self._remember(point, gradient, accepted)
            new_direction = self._two_loop(gradient, full_history)
            direction = torch.where(accepted, new_direction, self.direction)
            step_length = torch.where(accepted, self.lr, self._shortened_step(loss, slope))
        self.accepted.copy_(accepted)
        for kept, value in ((self.accepted_point, point), (self.accepted_loss, loss),
                            (self.accepted_gradient, gradient)):
            kept.copy_(torch.where(accepted, value, kept))
        # torch's stop tests, as device flags: a zero gradient, an ascent direction, a step that moves nothing
        running = self.running & (self.accepted_gradient.abs().max() > self.tolerance_grad)
        running &= self.accepted_gradient.dot(direction) <= -self.tolerance_change
        running &= (direction * step_length).abs().max() > self.tolerance_change
        self.running.copy_(running)
        self.direction.copy_(direction)
        self.step_length.copy_(torch.where(running, step_length, 0.0))
        point.copy_(self.accepted_point + self.direction * self.step_length)
        self.iterations += 1

    @torch.no_grad()
    def settle(self) -> None:
        """Put ``x`` back on the last accepted point (the end of a run: the pending trial was never judged)."""
        self.x.detach().reshape(-1).copy_(self.accepted_point)

    def _shortened_step(self, loss: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:
        """The next step along a rejected direction: the quadratic's minimum, within BACKTRACK_RANGE of it."""
        step = self.step_length
        rise = loss - self.accepted_loss - slope * step  # > 0 for a trial that failed the Armijo test
        minimum = -slope * step * step / (2 * rise)
        low, high = BACKTRACK_RANGE
        return torch.where(torch.isfinite(minimum), minimum.clamp(low * step, high * step), low * step)

    def _remember(self, point: torch.Tensor, gradient: torch.Tensor, accepted: torch.Tensor) -> None:
        """Write the accepted step's (s, y) pair into the ring when it passes the curvature test (on the device)."""
        step = point - self.accepted_point
        change = gradient - self.accepted_gradient
        curvature = change.dot(step)
        keep = accepted & (curvature > CURVATURE_THRESHOLD)
        slot = (self.pairs_kept % self.history_size).view(1)
        for ring, row in ((self.steps, step), (self.gradient_changes, change)):
            ring.index_copy_(0, slot, torch.where(keep, row, ring.index_select(0, slot).view(-1)).view(1, -1))
        rho = torch.where(keep, 1.0 / curvature, self.inverse_curvatures.index_select(0, slot).view(()))
        self.inverse_curvatures.index_copy_(0, slot, rho.view(1))
        self.hessian_scale.copy_(torch.where(keep, curvature / change.dot(change), self.hessian_scale))
        self.pairs_kept.add_(keep.long())

    def _two_loop(self, gradient: torch.Tensor, full_history: bool) -> torch.Tensor:
        """-H g by the two-loop recursion over the ring's pairs, newest first.

        ``full_history`` (a CUDA graph): every slot, as device indices, each row gathered (empty slots are exact
        no-ops); otherwise the ring position is read once (free on the CPU), only the kept pairs are walked, and
        the rows are views, which halves the memory traffic."""
        if full_history:
            newest_first = (self.pairs_kept - 1 - self.ring_offsets) % self.history_size
            slots: list[Any] = [newest_first[i:i + 1] for i in range(self.history_size)]
        else:
            kept = int(self.pairs_kept)
            slots = [(kept - 1 - i) % self.history_size for i in range(min(kept, self.history_size))]

        def row(ring: torch.Tensor, slot: Any) -> torch.Tensor:
            return ring[slot] if isinstance(slot, int) else ring.index_select(0, slot).view(ring.shape[1:])

        alphas = []
        q = gradient.neg()
        for slot in slots:
            alpha = row(self.inverse_curvatures, slot) * row(self.steps, slot).dot(q)
            q.addcmul_(row(self.gradient_changes, slot), alpha, value=-1.0)
            alphas.append(alpha)
        r = q.mul_(self.hessian_scale)
        for slot, alpha in zip(reversed(slots), reversed(alphas), strict=True):
            beta = row(self.inverse_curvatures, slot) * row(self.gradient_changes, slot).dot(r)
            r.addcmul_(row(self.steps, slot), alpha - beta)
        return r
