"""What answers the requests: :class:`CaptionerBackend` (a trained captioner) and :class:`EchoBackend` (no model).

A backend is anything with ``name`` and ``caption(images, prompts, *, temperature, top_p, max_new_tokens)
-> list[str]`` (one answer per (image, prompt); a backend that also takes ``seed=`` gets the request's seed).
For true ``usage`` counts it also has ``prompt_tokens(image, prompt) -> int`` (the tokens the model reads for
that request: text and image) and ``completion_tokens(text) -> int``; without them the server counts
whitespace-separated words and no image tokens.
"""

from __future__ import annotations

import hashlib
import inspect
import time
from typing import Any, Protocol

from PIL import Image


class Backend(Protocol):
    name: str

    def caption(self, images: list[Image.Image], prompts: list[str], *, temperature: float, top_p: float, max_new_tokens: int) -> list[str]:
        ...


def takes_seed(backend: Backend) -> bool:
    return "seed" in inspect.signature(backend.caption).parameters


def count_prompt(backend: Backend, image: Image.Image, prompt: str) -> int:
    counter = getattr(backend, "prompt_tokens", None)
    return int(counter(image, prompt)) if counter else len(prompt.split())


def count_completion(backend: Backend, text: str) -> int:
    counter = getattr(backend, "completion_tokens", None)
    return int(counter(text)) if counter else len(text.split())


class CaptionerBackend:
    """:class:`vlm.captioner.Captioner` as a backend: a trained export dir, or (``checkpoint=None``) the newest
    export under ``logs/vlm.train`` (what ``python -m vlm.train`` leaves behind).

    The captioner takes one prompt per call, so a batch is answered in one call per distinct prompt. Usage
    counts are the captioner's own: the chat-templated prompt with the image placeholder expanded to
    ``tiles x num_image_tokens`` positions (exactly the ids the LLM reads), and the answer re-tokenised."""

    def __init__(self, checkpoint: str | None = None, name: str = "vlm-captioner", device: str | None = None):
        from vlm.captioner import Captioner

        self.captioner = Captioner.load(checkpoint, device=device)
        self.name = name
        self.tokenizer = self.captioner.vlm.tokenizer

    def caption(self, images, prompts, *, temperature, top_p, max_new_tokens, seed=None):
        gen: dict[str, Any] = dict(temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, seed=seed)
        out: list[str | None] = [None] * len(images)
        by_prompt: dict[str, list[int]] = {}
        for i, p in enumerate(prompts):
            by_prompt.setdefault(p, []).append(i)
        for p, idx in by_prompt.items():
            answers = self.captioner.caption([images[i] for i in idx], prompt=p or None, **gen)
            for i, a in zip(idx, answers, strict=True):
                out[i] = a
        return out

    def prompt_tokens(self, image: Image.Image, prompt: str) -> int:
        from vlm.chat import prompt_ids, user_message
        from vlm.images import tiles_of

        cap = self.captioner
        if hasattr(cap, "prompt_tokens"):  # a model=hf_vlm captioner: its processor expands the image tokens
            return cap.prompt_tokens(image, prompt)
        ids = prompt_ids(self.tokenizer, [user_message(prompt or cap.default_prompt)], 1)  # one <image> position
        tiles = len(tiles_of(image, cap.image_size, cap.max_num, cap.min_num))
        return len(ids) - 1 + tiles * cap.vlm.num_image_tokens

    def completion_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0


def image_digest(image: Image.Image) -> str:
    """The first 10 hex digits of the SHA-1 of the image's RGB pixels (what :class:`EchoBackend` answers with)."""
    return hashlib.sha1(image.convert("RGB").tobytes()).hexdigest()[:10]


class EchoBackend:
    """No model: answers ``image <digest> <W>x<H>: <prompt>`` cut to ``max_new_tokens`` words, so every answer
    says which image and prompt it belongs to (a load test sees any mix-up) and ``finish_reason`` is exact.

    Its tokens are whitespace-separated words, and each image costs ``image_tokens`` tokens (a fixed number
    per image, like a ViT with a fixed resolution). ``call_ms`` + ``item_ms`` x batch size of sleep per call
    stand in for a model whose forward pass has a fixed cost, which is what batching saves."""

    def __init__(self, name: str = "vlm-captioner", image_tokens: int = 16, call_ms: float = 0.0, item_ms: float = 0.0):
        self.name = name
        self.image_tokens = int(image_tokens)
        self.call_ms, self.item_ms = float(call_ms), float(item_ms)

    @staticmethod
    def answer(image: Image.Image, prompt: str, max_new_tokens: int) -> str:
        words = f"image {image_digest(image)} {image.width}x{image.height}: {prompt}".split()
        return " ".join(words[:max_new_tokens])

    def caption(self, images, prompts, *, temperature, top_p, max_new_tokens):
        if self.call_ms or self.item_ms:
            time.sleep((self.call_ms + self.item_ms * len(images)) / 1000.0)
        return [self.answer(im, p, max_new_tokens) for im, p in zip(images, prompts, strict=True)]

    def prompt_tokens(self, image: Image.Image, prompt: str) -> int:
        return len(prompt.split()) + self.image_tokens

    def completion_tokens(self, text: str) -> int:
        return len(text.split())
