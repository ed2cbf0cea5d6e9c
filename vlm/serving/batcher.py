"""Dynamic batching: requests that arrive within ``wait_ms`` of each other go into one backend call."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from .backends import Backend, count_completion, count_prompt, takes_seed
from .errors import ClientError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenSettings:
    temperature: float
    top_p: float
    max_new_tokens: int
    seed: int | None = None


@dataclass(frozen=True)
class Answer:
    text: str
    prompt_tokens: int
    completion_tokens: int


@dataclass
class Job:
    image: Image.Image
    prompt: str
    gen: GenSettings
    future: asyncio.Future = field(repr=False)


class Batcher:
    """A queue and one worker: requests arriving within ``wait_ms`` of the first go into one backend call.

    The backend runs on a single worker thread, so the event loop keeps accepting requests meanwhile and the
    model is never called from two threads at once. Jobs with different generation settings go into
    separate calls (the backend takes one set of settings per call); seeded sampling goes alone, so that the
    seed alone decides its answer. A job whose client went away before its call is dropped.
    """

    def __init__(self, backend: Backend, max_size: int = 16, wait_ms: float = 5.0, max_queue: int = 1024):
        self.backend = backend
        self.max_size = max(1, int(max_size))
        self.wait = max(0.0, float(wait_ms)) / 1000.0
        self.max_queue = int(max_queue)
        self.queue: asyncio.Queue[Job] = asyncio.Queue()
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="vlm-serve-model")
        self.task: asyncio.Task | None = None
        self.batches: list[int] = []  # sizes of the backend calls made, for /health and tests
        self.dropped = 0  # jobs whose client left before their call
        self.failed_calls = 0
        self._seed = takes_seed(backend)
        self._live = 0

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        self.pool.shutdown(wait=False, cancel_futures=True)

    def alive(self) -> bool:
        return self.task is not None and not self.task.done()

    def submit(self, image: Image.Image, prompt: str, gen: GenSettings) -> asyncio.Future:
        """The future of the :class:`Answer`; cancel it when the client goes away. A full queue is a 503."""
        if self.queue.qsize() >= self.max_queue:
            raise ClientError(f"the server is busy ({self.max_queue} requests waiting); retry later", status=503, type="server_busy",
                              headers={"Retry-After": "1"})  # the openai client waits that long, then retries
        fut = asyncio.get_running_loop().create_future()
        self.queue.put_nowait(Job(image, prompt, gen, fut))
        self._live += 1
        fut.add_done_callback(self._settled)
        return fut

    def _settled(self, fut: asyncio.Future) -> None:
        self._live -= 1

    def waiting(self) -> int:
        """Requests still waiting for an answer (queued or in a call), not counting clients that left."""
        return self._live

    async def _collect(self) -> list[Job]:
        jobs = [await self.queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait
        while len(jobs) < self.max_size:
            timeout = deadline - loop.time()
            if timeout <= 0:
                while len(jobs) < self.max_size and not self.queue.empty():
                    jobs.append(self.queue.get_nowait())
                break
            try:
                jobs.append(await asyncio.wait_for(self.queue.get(), timeout))
            except TimeoutError:
                break
        return jobs

    def _call(self, images: list[Image.Image], prompts: list[str], gen: GenSettings) -> list[Answer]:
        """One backend call and the usage counts of its answers, all on the model thread (a tokenizer is not
        safe to use from two threads at once)."""
        texts = self.backend.caption(images, prompts, **self._kwargs(gen))
        if len(texts) != len(images):
            raise RuntimeError(f"backend returned {len(texts)} answers for {len(images)} requests")
        return [Answer(str(t), count_prompt(self.backend, im, p), count_completion(self.backend, str(t)))
                for im, p, t in zip(images, prompts, texts, strict=True)]

    def _kwargs(self, gen: GenSettings) -> dict[str, Any]:
        kw: dict[str, Any] = {"temperature": gen.temperature, "top_p": gen.top_p, "max_new_tokens": gen.max_new_tokens}
        if gen.seed is not None and self._seed:  # only backends that take a seed are sent one
            kw["seed"] = gen.seed
        return kw

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._collect()
            groups: dict[GenSettings, list[Job]] = {}
            calls: list[tuple[GenSettings, list[Job]]] = []
            for job in jobs:
                if job.future.done():  # cancelled: the client went away
                    self.dropped += 1
                    continue
                if job.gen.seed is not None and job.gen.temperature > 0:
                    calls.append((job.gen, [job]))
                else:
                    groups.setdefault(job.gen, []).append(job)
            calls += list(groups.items())
            for gen, group in calls:
                self.batches.append(len(group))
                try:
                    answers = await loop.run_in_executor(self.pool, self._call, [j.image for j in group], [j.prompt for j in group], gen)
                except Exception as e:  # the model's fault, not the client's: a 500 for this batch only
                    self.failed_calls += 1
                    log.exception("backend failed on a batch of %d", len(group))
                    for j in group:
                        if not j.future.done():
                            j.future.set_exception(e)
                    continue
                for j, a in zip(group, answers, strict=True):
                    if not j.future.done():
                        j.future.set_result(a)
