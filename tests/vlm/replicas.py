"""Tiny random replicas of the real towers, built from their configs and saved the way the real checkpoints
are (``save_pretrained`` / safetensors + ``preprocessor_config.json``), so tests load them by path like a user
does, offline: InternVL-hf vision, a remote-code InternViT-like module, SigLIP vision and a Qwen2 LLM; and whole
VLMs for ``model=hf_vlm`` (LLaVA-1.5, LLaVA-NeXT, Qwen2-VL, InternVL-hf: 2-layer width-32 language models, 2-layer
vision towers, a byte-level BPE tokenizer trained on the caption corpus with the family's special tokens, the
family's own processor class and a chat template in its style)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from vlm.realsize_hf import INTERNVL_TEMPLATE, LLAVA_TEMPLATE, bpe_tokenizer

IMAGE = 28  # two 14-px patches a side -> 4 patches + CLS; pixel_shuffle=2 -> 1 token a tile

PREPROCESSOR = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
                "size": {"height": IMAGE, "width": IMAGE}, "do_center_crop": False}


def _preprocessor(out: Path, **extra) -> None:
    (out / "preprocessor_config.json").write_text(json.dumps({**PREPROCESSOR, **extra}))


def internvl_hf_vision(out: Path) -> Path:
    """transformers' native ``InternVLVisionModel`` (the vision part of an InternVL "-hf" checkpoint)."""
    from transformers import InternVLVisionConfig, InternVLVisionModel

    torch.manual_seed(0)
    cfg = InternVLVisionConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                               image_size=IMAGE, patch_size=14)
    InternVLVisionModel(cfg).save_pretrained(out)
    _preprocessor(out, image_processor_type="GotOcr2ImageProcessor", crop_to_patches=False)
    return out


def siglip_vision(out: Path) -> Path:
    from transformers import SiglipVisionConfig, SiglipVisionModel

    torch.manual_seed(0)
    cfg = SiglipVisionConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                             image_size=IMAGE, patch_size=14)
    SiglipVisionModel(cfg).save_pretrained(out)
    _preprocessor(out, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5], image_processor_type="SiglipImageProcessor")
    return out


CONFIG_PY = '''
from transformers import PretrainedConfig


class InternVisionConfig(PretrainedConfig):
    model_type = "intern_vit_6b"

    def __init__(self, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 image_size=28, patch_size=14, num_channels=3, layer_norm_eps=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.hidden_size, self.num_hidden_layers = hidden_size, num_hidden_layers
        self.num_attention_heads, self.intermediate_size = num_attention_heads, intermediate_size
        self.image_size, self.patch_size, self.num_channels = image_size, patch_size, num_channels
        self.layer_norm_eps = layer_norm_eps
'''

# Like InternViT-300M-448px's modeling_intern_vit.py where it matters here: it imports einops, its layers are
# checkpointable, it returns hidden states with a CLS token first, and its __init__ never calls post_init().
MODELING_PY = '''
import torch
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .configuration_intern_vit import InternVisionConfig


class InternAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.heads = config.num_attention_heads
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, x):
        q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        out = nn.functional.scaled_dot_product_attention(q, k, v)
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))


class InternVisionEncoderLayer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attn = InternAttention(config)
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = nn.Sequential(nn.Linear(config.hidden_size, config.intermediate_size), nn.GELU(),
                                 nn.Linear(config.intermediate_size, config.hidden_size))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class InternVisionEncoder(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.layers = nn.ModuleList([InternVisionEncoderLayer(config) for _ in range(config.num_hidden_layers)])
        self.gradient_checkpointing = False

    def forward(self, x):
        states = (x,)
        for layer in self.layers:
            x = checkpoint(layer, x, use_reentrant=False) if self.gradient_checkpointing and self.training else layer(x)
            states += (x,)
        return x, states


class InternVisionModel(PreTrainedModel):
    main_input_name = "pixel_values"
    config_class = InternVisionConfig
    supports_gradient_checkpointing = True
    _no_split_modules = ["InternVisionEncoderLayer"]

    def __init__(self, config):
        super().__init__(config)
        self.config = config
        n = (config.image_size // config.patch_size) ** 2
        self.patch_embedding = nn.Conv2d(config.num_channels, config.hidden_size, config.patch_size, config.patch_size)
        self.class_embedding = nn.Parameter(torch.randn(1, 1, config.hidden_size))
        self.position_embedding = nn.Parameter(torch.randn(1, n + 1, config.hidden_size))
        self.encoder = InternVisionEncoder(config)
        # (no self.post_init(): the real InternViT does not call it either)

    def forward(self, pixel_values=None, output_hidden_states=None, return_dict=None, **kwargs):
        x = rearrange(self.patch_embedding(pixel_values), "b c h w -> b (h w) c")
        x = torch.cat([self.class_embedding.expand(x.shape[0], -1, -1).to(x.dtype), x], 1)
        x, states = self.encoder(x + self.position_embedding.to(x.dtype))
        return BaseModelOutputWithPooling(last_hidden_state=x, pooler_output=x[:, 0],
                                          hidden_states=states if output_hidden_states else None)
'''


def remote_internvit(out: Path) -> Path:
    """A remote-code InternViT-like checkpoint: ``auto_map`` config + modeling file written into ``out``."""
    from safetensors.torch import save_file
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    out.mkdir(parents=True, exist_ok=True)
    (out / "configuration_intern_vit.py").write_text(CONFIG_PY)
    (out / "modeling_intern_vit.py").write_text(MODELING_PY)
    auto_map = {"AutoConfig": "configuration_intern_vit.InternVisionConfig",
                "AutoModel": "modeling_intern_vit.InternVisionModel"}
    config_cls = get_class_from_dynamic_module(auto_map["AutoConfig"], str(out))
    model_cls = get_class_from_dynamic_module(auto_map["AutoModel"], str(out))
    config = config_cls(image_size=IMAGE, patch_size=14)
    config.auto_map = auto_map
    config.architectures = ["InternVisionModel"]
    config.save_pretrained(out)
    torch.manual_seed(0)
    model = model_cls(config).to(torch.bfloat16)  # the real checkpoint ships bf16 weights
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"),
              metadata={"format": "pt"})
    config.dtype = "bfloat16"
    config.save_pretrained(out)
    _preprocessor(out)
    return out


def qwen2_llm(out: Path) -> Path:
    """A tiny random ``Qwen2ForCausalLM`` with a ChatML tokenizer (trained on a few caption-like lines)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from vlm.models.llm import train_tokenizer
    from vlm.synth import caption_corpus

    tok = train_tokenizer(caption_corpus(), 400)
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                      tie_word_embeddings=True, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    Qwen2ForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


# ---- whole VLMs (model=hf_vlm) --------------------------------------------------------------------------


QWEN_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
def _tokenizer(specials: list[str], eos: str, named: dict[str, str] | None = None):
    from vlm.synth import caption_corpus

    return bpe_tokenizer(specials, eos, named, texts=caption_corpus(), vocab_size=400)


def _text_config(cls, tok, **extra):
    return cls(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
               num_key_value_heads=1, max_position_embeddings=1024, eos_token_id=tok.eos_token_id,
               pad_token_id=tok.pad_token_id, **extra)


def _clip():
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                            image_size=IMAGE, patch_size=14, projection_dim=32)


def _save(model, processor, tok, out: Path) -> Path:
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def llava(out: Path) -> Path:
    from transformers import (
        CLIPImageProcessor,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tok = _tokenizer(["</s>", "<image>"], "</s>")
    cfg = LlavaConfig(vision_config=_clip(), text_config=_text_config(LlamaConfig, tok),
                      image_token_id=tok.convert_tokens_to_ids("<image>"), vision_feature_layer=-2,
                      vision_feature_select_strategy="default")
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(cfg)
    ip = CLIPImageProcessor(size={"shortest_edge": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE})
    proc = LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=14, vision_feature_select_strategy="default",
                          num_additional_image_tokens=1, chat_template=LLAVA_TEMPLATE)
    return _save(model, proc, tok, out)


def llava_next(out: Path) -> Path:
    from transformers import (
        LlamaConfig,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessor,
        LlavaNextProcessor,
    )

    tok = _tokenizer(["</s>", "<image>"], "</s>")
    pins = [[IMAGE, IMAGE], [IMAGE, 2 * IMAGE], [2 * IMAGE, IMAGE], [2 * IMAGE, 2 * IMAGE]]
    cfg = LlavaNextConfig(vision_config=_clip(), text_config=_text_config(LlamaConfig, tok),
                          image_token_id=tok.convert_tokens_to_ids("<image>"), image_grid_pinpoints=pins,
                          vision_feature_layer=-2, vision_feature_select_strategy="default")
    torch.manual_seed(0)
    model = LlavaNextForConditionalGeneration(cfg)
    ip = LlavaNextImageProcessor(size={"shortest_edge": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE},
                                 image_grid_pinpoints=pins)
    proc = LlavaNextProcessor(image_processor=ip, tokenizer=tok, patch_size=14, vision_feature_select_strategy="default",
                              num_additional_image_tokens=1, chat_template=LLAVA_TEMPLATE)
    return _save(model, proc, tok, out)


def qwen2_vl(out: Path) -> Path:
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )
    from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLTextConfig

    specials = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    tok = _tokenizer(specials, "<|im_end|>")
    ids = {t: tok.convert_tokens_to_ids(t) for t in specials}
    text = _text_config(Qwen2VLTextConfig, tok, bos_token_id=None, rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3]})
    vision = {"depth": 2, "embed_dim": 32, "hidden_size": 32, "num_heads": 2, "mlp_ratio": 2, "patch_size": 14,
              "spatial_merge_size": 2, "temporal_patch_size": 2}
    cfg = Qwen2VLConfig(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                        video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                        vision_end_token_id=ids["<|vision_end|>"])
    torch.manual_seed(0)
    model = Qwen2VLForConditionalGeneration(cfg)
    px = {"shortest_edge": 56 * 56, "longest_edge": 56 * 56}
    ip = Qwen2VLImageProcessor(size=px, patch_size=14, merge_size=2, temporal_patch_size=2)
    vp = Qwen2VLVideoProcessor(size=px, patch_size=14, merge_size=2, temporal_patch_size=2)
    proc = Qwen2VLProcessor(image_processor=ip, tokenizer=tok, video_processor=vp, chat_template=QWEN_TEMPLATE)
    return _save(model, proc, tok, out)


def internvl(out: Path) -> Path:
    from transformers import (
        GotOcr2ImageProcessor,
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLProcessor,
        InternVLVideoProcessor,
        InternVLVisionConfig,
        Qwen2Config,
    )

    named = {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
             "video_token": "<video>"}
    tok = _tokenizer(["<|im_start|>", "<|im_end|>", *named.values()], "<|im_end|>", named)
    vision = InternVLVisionConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                  image_size=IMAGE, patch_size=14)
    cfg = InternVLConfig(vision_config=vision, text_config=_text_config(Qwen2Config, tok),
                         image_token_id=tok.convert_tokens_to_ids("<IMG_CONTEXT>"), downsample_ratio=0.5)
    torch.manual_seed(0)
    model = InternVLForConditionalGeneration(cfg)
    size = {"height": IMAGE, "width": IMAGE}
    ip = GotOcr2ImageProcessor(size=size, max_patches=4)  # dynamic tiling: a square image is 2x2 + thumbnail
    vp = InternVLVideoProcessor(size=size)
    proc = InternVLProcessor(image_processor=ip, tokenizer=tok, video_processor=vp, image_seq_length=1,
                             chat_template=INTERNVL_TEMPLATE)
    return _save(model, proc, tok, out)


VLMS = {"llava": llava, "llava_next": llava_next, "qwen2_vl": qwen2_vl, "internvl": internvl}
