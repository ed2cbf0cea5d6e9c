"""The exported model's ``AutoProcessor``: the captioner's image preprocessing, prompt format and image token.

* image processor: resize to the tower's ``image_size`` with PIL's bicubic (``vlm.images.tiles_of``), rescale by
  1/255, normalise with the tower's mean / std; InternVL tiling (``data.tiles``) as ``crop_to_patches`` with the
  same min / max tiles (the repository's tiling is transformers' ``get_optimal_tiled_canvas`` rule);
* chat template: the LLM tokenizer's own template behind a prefix that flattens transformers' content lists
  (``[{"type": "image"}, {"type": "text", "text": p}]``) into the repository's user text ``"<image>\\n" + p``,
  so ``apply_chat_template`` renders exactly what ``vlm.chat.prompt_ids`` renders;
* image token: the repository's ``<image>`` special token, expanded to ``num_image_tokens`` per tile. InternVL-hf
  wraps an image's tokens in start / end tokens (``<img>`` ... ``</img>``) the captioner never saw; they are
  written as empty strings, so the expansion is the image tokens alone.
"""

from __future__ import annotations

from pathlib import Path

from vlm.chat import IMAGE_TOKEN

FLATTEN = (
    "{%- set ns = namespace(msgs=[]) -%}"
    "{%- for m in messages -%}"
    "{%- if m['content'] is string -%}{%- set ns.msgs = ns.msgs + [m] -%}"
    "{%- else -%}{%- set t = namespace(s='') -%}"
    "{%- for c in m['content'] -%}"
    "{%- if c['type'] == 'image' -%}{%- set t.s = t.s + '" + IMAGE_TOKEN + "\\n' -%}"
    "{%- elif c['type'] == 'text' -%}{%- set t.s = t.s + c['text'] -%}{%- endif -%}"
    "{%- endfor -%}"
    "{%- set ns.msgs = ns.msgs + [{'role': m['role'], 'content': t.s}] -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- set messages = ns.msgs -%}"
)

INTERNVL_TOKENS = {"start_image_token": "", "end_image_token": "", "context_image_token": IMAGE_TOKEN,
                   "video_token": "<video>"}


def chat_template(tokenizer) -> str:
    return FLATTEN + tokenizer.chat_template


def image_processor(cap, layout):
    from transformers import GotOcr2ImageProcessorPil
    from transformers.image_utils import PILImageResampling

    tower = cap.vlm.vision
    size = {"height": cap.image_size, "width": cap.image_size}
    common = dict(size=size, resample=PILImageResampling.BICUBIC, do_resize=True, do_rescale=True,
                  rescale_factor=1 / 255, do_normalize=True, image_mean=tower.mean.flatten().tolist(),
                  image_std=tower.std.flatten().tolist(), do_convert_rgb=True)
    if layout.kind == "llava":
        from transformers import LlavaImageProcessorPil

        return LlavaImageProcessorPil(**common, do_pad=False, do_center_crop=False)
    return GotOcr2ImageProcessorPil(**common, crop_to_patches=cap.max_num > 1, min_patches=cap.min_num,
                                    max_patches=cap.max_num)


def write_processor(cap, layout, out: Path) -> None:
    """Tokenizer + image processor + processor config into ``out``."""
    from transformers import AutoTokenizer, InternVLProcessor, LlavaProcessor

    tok = cap.vlm.tokenizer
    tok.save_pretrained(out)
    template = chat_template(tok)
    if layout.kind == "llava":
        proc = LlavaProcessor(image_processor=image_processor(cap, layout), tokenizer=tok,
                              patch_size=cap.vlm.vision.patch_size,
                              vision_feature_select_strategy="default" if layout.has_cls else "full",
                              chat_template=template, image_token=IMAGE_TOKEN,
                              num_additional_image_tokens=1 if layout.has_cls else 0)
    else:
        from transformers import InternVLVideoProcessor

        tok = AutoTokenizer.from_pretrained(out, extra_special_tokens=INTERNVL_TOKENS)
        ip = image_processor(cap, layout)
        video = InternVLVideoProcessor(size=ip.size, image_mean=ip.image_mean, image_std=ip.image_std)
        proc = InternVLProcessor(image_processor=ip, tokenizer=tok, video_processor=video,
                                 image_seq_length=layout.num_image_tokens, chat_template=template)
    proc.save_pretrained(out)
