"""``vlm.realsize_hf``: the real-size whole-VLM configurations and the policies applied to them, on the meta device
(no weights): parameter counts checked against the published models' parts."""

from __future__ import annotations

import pytest

from vlm.realsize_hf import row

MISTRAL_7B = 7_241_732_096  # Mistral-7B-v0.1, vocab 32000
QWEN25_3B = 3_085_938_688  # Qwen2.5-3B, vocab 151936, tied embeddings
CLIP_L14_224 = 303_179_776  # CLIP ViT-L/14's vision model at 224 px (257 positions)


def _lora(r: int, shapes: list[tuple[int, int]]) -> int:
    return sum(r * (i + o) for i, o in shapes)


@pytest.mark.parametrize("family, llm, vision, llm_lora", [
    # llava-v1.6-mistral-7b: vocab 32064 (64 more rows in the embedding and the head); CLIP-L at 336 px (577 positions)
    ("llava_next_7b", MISTRAL_7B + 2 * 64 * 4096, CLIP_L14_224 + (577 - 257) * 1024,
     32 * _lora(64, [(4096, 4096), (4096, 1024), (4096, 1024), (4096, 4096), (4096, 14336), (4096, 14336), (14336, 4096)])),
    # InternVL2_5-4B: Qwen2.5-3B cut to vocab 151674, with an untied lm_head of that size
    ("internvl2_5_4b", QWEN25_3B - (151936 - 151674) * 2048 + 151674 * 2048, None,
     36 * _lora(64, [(2048, 2048), (2048, 256), (2048, 256), (2048, 2048), (2048, 11008), (2048, 11008), (11008, 2048)])),
])
def test_real_size_counts_and_lora_on_the_language_model_only(family, llm, vision, llm_lora, tmp_path):
    lora = row(family, "lora", tmp_path, steps=0)
    assert lora["llm"] - lora["llm_trainable"] == llm  # the adapters come on top of the published model's weights
    assert vision is None or lora["vision"] == vision
    assert lora["llm_trainable"] == llm_lora and lora["vision_trainable"] == 0
    assert lora["trainable"] == llm_lora + lora["projector"]  # the projector trains, the tower does not
    assert lora["total"] == lora["vision"] + lora["projector"] + lora["llm"]  # every parameter in one of the parts
    freeze = row(family, "freeze", tmp_path, steps=0)
    assert freeze["llm"] == llm and freeze["llm_trainable"] == 0
    assert freeze["trainable"] == freeze["vision"] + freeze["projector"]
