"""Training inputs from the tokenizer's own chat template: image placeholders expanded, labels on assistant turns.

``encode(tokenizer, messages, n_image_tokens)`` renders the conversation with ``apply_chat_template``; for each
assistant turn it also renders the conversation up to that turn with ``add_generation_prompt=True`` and
requires the full text to start with it (otherwise the template does not render turns incrementally, and
the labels would be wrong: a template mismatch). Tokens whose characters lie inside an assistant turn get
labels; the prompt, the template scaffolding and the image positions get -100. A sample without a single
supervised token fails instead of silently training on nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.errors import DataError

IMAGE_TOKEN = "<image>"
IGNORE = -100


class TemplateError(DataError):
    """The conversation cannot be turned into supervised tokens (no assistant turn, template mismatch, ...)."""


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]


def user_message(prompt: str, n_images: int = 1) -> dict:
    return {"role": "user", "content": (IMAGE_TOKEN + "\n") * n_images + prompt}


def _render(tokenizer, messages: list[dict], add_generation_prompt: bool) -> str:
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    except Exception as e:
        raise TemplateError(f"chat template failed: {type(e).__name__}: {e}") from None


def _expand(text: str, n_image_tokens: int) -> str:
    return text.replace(IMAGE_TOKEN, IMAGE_TOKEN * n_image_tokens)


def prompt_ids(tokenizer, messages: list[dict], n_image_tokens: int) -> list[int]:
    """Token ids of a conversation that ends with the generation prompt (for inference)."""
    text = _expand(_render(tokenizer, messages, add_generation_prompt=True), n_image_tokens)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def encode(tokenizer, messages: list[dict], n_image_tokens: int, n_images: int = 1) -> Encoded:
    if not any(m.get("role") == "assistant" for m in messages):
        raise TemplateError("conversation has no assistant turn (nothing to learn)")
    full = _render(tokenizer, messages, add_generation_prompt=False)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prefix = _render(tokenizer, messages[:i], add_generation_prompt=True)
        upto = _render(tokenizer, messages[: i + 1], add_generation_prompt=False)
        if not full.startswith(upto) or not upto.startswith(prefix):
            raise TemplateError(
                f"chat template mismatch: the text up to assistant turn {i} is not a prefix of the full conversation"
            )
        content = str(m["content"])
        start = upto.find(content, len(prefix))
        if not content.strip() or start < 0:
            raise TemplateError(f"assistant turn {i} is empty or not rendered by the chat template")
        spans.append((len(prefix), len(upto)))
    # Expand the image placeholder after locating spans: positions shift by a fixed amount per placeholder.
    extra = len(IMAGE_TOKEN) * (n_image_tokens - 1)
    def shift(pos: int) -> int:
        return pos + full[:pos].count(IMAGE_TOKEN) * extra
    text = _expand(full, n_image_tokens)
    spans = [(shift(a), shift(b)) for a, b in spans]
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    labels = []
    for tok, (a, b) in zip(ids, offsets, strict=True):
        inside = any(s <= a and b <= e for s, e in spans) and b > a
        labels.append(tok if inside else IGNORE)
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    n_found = sum(1 for t in ids if t == image_id)
    if n_found != n_image_tokens * n_images:
        raise TemplateError(
            f"expected {n_image_tokens * n_images} image tokens after expansion, found {n_found} "
            f"(is '{IMAGE_TOKEN}' a single special token of the tokenizer?)"
        )
    if all(x == IGNORE for x in labels):
        raise TemplateError("no supervised token: the assistant turn(s) map to no token")
    return Encoded(ids, labels)
