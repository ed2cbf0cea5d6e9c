"""Labels from the tokenizer's own chat template, and caption cleaning, on hand-made cases."""

from __future__ import annotations

import pytest

from vlm import chat
from vlm.caption_clean import clean_caption
from vlm.models.llm import train_tokenizer


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(["A shoe by Zorvik.", "Describe the product in the image.", "An unbranded cup."], 300)


def test_labels_cover_exactly_the_assistant_turn(tok):
    msgs = [chat.user_message("Describe the product in the image."), {"role": "assistant", "content": "A shoe by Zorvik."}]
    enc = chat.encode(tok, msgs, n_image_tokens=5)
    image_id = tok.convert_tokens_to_ids(chat.IMAGE_TOKEN)
    assert enc.input_ids.count(image_id) == 5
    supervised = [t for t, lab in zip(enc.input_ids, enc.labels, strict=True) if lab != chat.IGNORE]
    assert tok.decode(supervised) == "A shoe by Zorvik.<|im_end|>\n"
    # every label is either ignored or equals its input id; prompt and image positions are ignored
    assert all(lab in (chat.IGNORE, t) for t, lab in zip(enc.input_ids, enc.labels, strict=True))
    first = enc.labels.index(next(lab for lab in enc.labels if lab != chat.IGNORE))
    assert tok.decode(enc.input_ids[:first]).endswith("<|im_start|>assistant\n")


def test_multi_turn_labels_both_assistant_turns(tok):
    msgs = [chat.user_message("Describe the product in the image."), {"role": "assistant", "content": "An unbranded cup."},
            {"role": "user", "content": "Describe the product in the image."}, {"role": "assistant", "content": "A shoe by Zorvik."}]
    enc = chat.encode(tok, msgs, n_image_tokens=2)
    text = tok.decode([t for t, lab in zip(enc.input_ids, enc.labels, strict=True) if lab != chat.IGNORE])
    assert text == "An unbranded cup.<|im_end|>\nA shoe by Zorvik.<|im_end|>\n"


def test_conversation_without_assistant_turn_fails(tok):
    with pytest.raises(chat.TemplateError, match="no assistant turn"):
        chat.encode(tok, [chat.user_message("Describe the product in the image.")], 4)


def test_template_mismatch_fails_loudly(tok):
    import copy

    bad = copy.deepcopy(tok)
    # A template that renders the conversation differently once a reply exists (e.g. hides earlier turns).
    bad.chat_template = (
        "{% if add_generation_prompt %}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}<|im_start|>assistant\n{% else %}{{ messages[-1]['content'] }}<|im_end|>{% endif %}"
    )
    msgs = [chat.user_message("Describe the product in the image."), {"role": "assistant", "content": "A shoe by Zorvik."}]
    with pytest.raises(chat.TemplateError, match="chat template mismatch"):
        chat.encode(bad, msgs, 4)


def test_missing_image_token_in_vocab_fails(tok):
    msgs = [{"role": "user", "content": "no image here"}, {"role": "assistant", "content": "A shoe by Zorvik."}]
    with pytest.raises(chat.TemplateError, match="expected 4 image tokens"):
        chat.encode(tok, msgs, 4)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("A shoe by Zorvik. It is red and", "A shoe by Zorvik."),  # truncated: cut after the last full stop
        ("  A   cup.  ", "A cup."),
        ("a bag a bag a bag a bag a bag", None),  # loop
        ("好的好的好的好的好的", None),  # loop without spaces
        ("\x00\x01\x02\x03 ok", None),  # garbled
        ("x", None),  # too short
        ("One. Two. Three. Four.", "One. Two."),  # length limit cuts at a full stop
    ],
)
def test_clean_caption(text, expected):
    assert clean_caption(text, max_chars=12 if text.startswith("One") else 400) == expected
