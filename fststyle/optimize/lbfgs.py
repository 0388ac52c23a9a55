"""An L-BFGS whose whole state lives on the image's device, so an iteration never waits for the host.

The algorithm is ``torch.optim.LBFGS`` without a line search (``line_search_fn=None``), as neural-style's
``optim.lbfgs`` runs Gatys et al. 2016 (jcjohnson/neural-style): the two-loop recursion of Nocedal & Wright,
"Numerical Optimization" (2006), Algorithm 7.4, a first step of ``min(1, 1/|g|_1) * lr`` and ``lr`` after it.
What differs is where the decisions are made. torch's loop reads ``float(loss)``, its curvature test ``ys > 1e-10``
and its stop tests on the host, and passes 0-dim tensors as ``alpha`` (each a sync: pytorch/pytorch issue
"LBFGS syncs with the host"). Here the history is a preallocated ring of ``history_size`` rows, the curvature test
and the stop tests are ``torch.where`` on the device, and a stopped optimiser keeps its image unchanged instead of
leaving the loop. So one iteration (zero grad, loss, backward, ``step``) is a fixed sequence of kernels, which
the engine captures in a CUDA graph.
"""

from __future__ import annotations

import torch

#: torch.optim.LBFGS keeps a (step, gradient change) pair only when their dot product exceeds this
CURVATURE_THRESHOLD = 1e-10


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
        self.previous_gradient = torch.zeros(size, **options)
        self.previous_loss = torch.zeros((), **options)
        self.direction = torch.zeros(size, **options)
        self.step_length = torch.zeros((), **options)
        self.running = torch.ones((), dtype=torch.bool, device=x.device)
        self.ring_offsets = torch.arange(history_size, device=x.device)
        self.iterations = 0

    @torch.no_grad()
    def step(self, loss: torch.Tensor, full_history: bool = False) -> None:
        """One iteration from ``loss`` (0-dim) and ``x.grad`` at the current ``x``; moves ``x`` in place.

        ``full_history`` walks all ``history_size`` slots (empty ones are exact no-ops) instead of the
        ``min(iterations, history_size)`` that can be filled, so every call runs the same kernels (a CUDA graph)."""
        gradient = self.x.grad.reshape(-1).float()
        loss = loss.detach().float()
        # torch's stop tests, each a device flag: a zero gradient, or (after the first step) no change in the
        # loss or in x; a stopped optimiser leaves x and its history as they are
        running = self.running & (gradient.abs().max() > self.tolerance_grad)
        if self.iterations == 0:
            direction = gradient.neg()
            step_length = (1.0 / gradient.abs().sum()).clamp(max=1.0) * self.lr
        else:
            running &= (loss - self.previous_loss).abs() >= self.tolerance_change
            running &= (self.direction * self.step_length).abs().max() > self.tolerance_change
            self._remember(gradient, running)
            direction = self._two_loop(gradient, self.history_size if full_history else
                                       min(self.iterations, self.history_size))
            step_length = torch.full_like(self.step_length, self.lr)
        running &= gradient.dot(direction) <= -self.tolerance_change  # not a descent direction: stop
        self.running.copy_(running)
        self.previous_gradient.copy_(gradient)
        self.previous_loss.copy_(loss)
        self.direction.copy_(direction)
        self.step_length.copy_(torch.where(running, step_length, 0.0))
        self.x.view(-1).add_(self.direction * self.step_length)
        self.iterations += 1

    def _remember(self, gradient: torch.Tensor, running: torch.Tensor) -> None:
        """Write the last step's (s, y) pair into the ring when it passes the curvature test (on the device)."""
        step = self.direction * self.step_length
        change = gradient - self.previous_gradient
        curvature = change.dot(step)
        keep = running & (curvature > CURVATURE_THRESHOLD)
        slot = (self.pairs_kept % self.history_size).view(1)
        for ring, row in ((self.steps, step), (self.gradient_changes, change)):
            ring.index_copy_(0, slot, torch.where(keep, row, ring.index_select(0, slot).view(-1)).view(1, -1))
        rho = torch.where(keep, 1.0 / curvature, self.inverse_curvatures.index_select(0, slot).view(()))
        self.inverse_curvatures.index_copy_(0, slot, rho.view(1))
        self.hessian_scale.copy_(torch.where(keep, curvature / change.dot(change), self.hessian_scale))
        self.pairs_kept.add_(keep.long())

    def _two_loop(self, gradient: torch.Tensor, pairs: int) -> torch.Tensor:
        """-H g by the two-loop recursion over the newest ``pairs`` slots of the ring (newest first)."""
        newest_first = (self.pairs_kept - 1 - self.ring_offsets[:pairs]) % self.history_size
        rows = [newest_first[i:i + 1] for i in range(pairs)]
        alphas = []
        q = gradient.neg()
        for row in rows:
            alpha = self.inverse_curvatures.index_select(0, row) * self.steps.index_select(0, row).view(-1).dot(q)
            q.addcmul_(self.gradient_changes.index_select(0, row).view(-1), alpha, value=-1.0)
            alphas.append(alpha)
        r = q.mul_(self.hessian_scale)
        for row, alpha in zip(reversed(rows), reversed(alphas), strict=True):
            change = self.gradient_changes.index_select(0, row).view(-1)
            beta = self.inverse_curvatures.index_select(0, row) * change.dot(r)
            r.addcmul_(self.steps.index_select(0, row).view(-1), alpha - beta)
        return r
