"""One worker thread that runs a server's stylise requests: a bounded queue, and batches of requests that share
a network, settings and image size."""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch

from fststyle.stylize.stylizer import Stylizer


class QueueFull(Exception):
    """The queue holds as many requests as it may; the caller answers 503 and asks the client to retry."""


@dataclass(eq=False)  # compared by identity: the queue removes a request it batches, whatever its pixels
class Request:
    """One image 1,3,H,W to stylise, its settings, and the future its (result 1,3,H,W, network seconds) goes to."""

    stylizer: Stylizer
    image: torch.Tensor
    strength: float
    preserve_color: bool
    future: Future = field(default_factory=Future)

    def batch_key(self) -> tuple:
        """Requests with equal keys run as one batch: the same network and settings, images of the same size."""
        return id(self.stylizer), self.strength, self.preserve_color, tuple(self.image.shape[-2:])


@dataclass
class BatchStats:
    """What the worker has done: requests served, batches run, the largest batch, requests refused as busy."""

    requests: int = 0
    batches: int = 0
    largest_batch: int = 0
    refused: int = 0


class BatchingQueue:
    """``submit`` returns a Future at once (or raises QueueFull past ``capacity`` waiting requests); one thread
    takes the oldest request with up to ``max_batch - 1`` waiting ones of the same batch key and runs them as
    one N,3,H,W batch, so the network runs one request at a time per device and memory stays bounded.
    ``urgent`` requests (webcam frames, where a late frame is a useless one) go before the others."""

    def __init__(self, capacity: int, max_batch: int) -> None:
        if capacity < 1 or max_batch < 1:
            raise ValueError(f"capacity={capacity} and max_batch={max_batch} must be >= 1")
        self.capacity, self.max_batch = capacity, max_batch
        self.stats = BatchStats()
        self._urgent: deque[Request] = deque()
        self._waiting: deque[Request] = deque()
        self._ready = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="fststyle-serve-batches", daemon=True)
        self._thread.start()

    def submit(self, stylizer: Stylizer, image: torch.Tensor, *, strength: float = 1.0,
               preserve_color: bool = False, urgent: bool = False) -> Future:
        """Queue ``image`` 1,3,H,W; the Future gives (stylised 1,3,H,W on the CPU, seconds of its batch)."""
        request = Request(stylizer, image, strength, preserve_color)
        with self._ready:
            if self._closed:
                raise QueueFull("the server is shutting down")
            if self.waiting >= self.capacity:
                self.stats.refused += 1
                raise QueueFull(f"{self.waiting} requests are waiting, the most this server queues")
            (self._urgent if urgent else self._waiting).append(request)
            self._ready.notify()
        return request.future

    @property
    def waiting(self) -> int:
        return len(self._urgent) + len(self._waiting)

    def close(self) -> None:
        """Stop the worker after the batch it is running; requests still waiting are cancelled."""
        with self._ready:
            self._closed = True
            for request in (*self._urgent, *self._waiting):
                request.future.cancel()
            self._urgent.clear()
            self._waiting.clear()
            self._ready.notify()
        self._thread.join(timeout=60)

    def _next_batch(self) -> list[Request] | None:
        with self._ready:
            while not self.waiting and not self._closed:
                self._ready.wait()
            if self._closed:
                return None
            lane = self._urgent or self._waiting
            first = lane.popleft()
            batch, key = [first], first.batch_key()
            for request in list(lane):
                if len(batch) == self.max_batch:
                    break
                if request.batch_key() == key:
                    lane.remove(request)
                    batch.append(request)
            return batch

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            batch = [request for request in batch if request.future.set_running_or_notify_cancel()]
            if not batch:
                continue
            first = batch[0]
            try:
                started = time.perf_counter()
                images = torch.cat([request.image for request in batch])
                stylised = first.stylizer.stylize(images, strength=first.strength,
                                                  preserve_color=first.preserve_color).cpu()
                seconds = time.perf_counter() - started
            except Exception as error:  # every waiting client gets the error; the worker goes on
                for request in batch:
                    request.future.set_exception(error)
                continue
            self.stats.requests += len(batch)
            self.stats.batches += 1
            self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
            for index, request in enumerate(batch):
                request.future.set_result((stylised[index:index + 1], seconds))
