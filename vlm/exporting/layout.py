"""Which standard transformers VLM hosts a composed captioner, with its config and its weights.

The repository's projectors (``vlm.models.projector``) against the two standard layouts:

* ``mlp2x_gelu`` is ``LayerNorm -> Linear -> GELU -> Linear``: exactly InternVL-hf's projector
  (``multi_modal_projector.layer_norm / linear_1 / act / linear_2``), whose pixel shuffle
  (``downsample_ratio = 1 / f``) orders channels like ``vlm.models.vision.pixel_shuffle``; with
  ``pixel_shuffle=1`` it is the same class with ``downsample_ratio=1.0`` (LLaVA's projector has no LayerNorm,
  and a LayerNorm does not fold into a linear layer). So ``mlp2x_gelu`` always exports as InternVL-hf.
* ``linear`` is one Linear: LLaVA's ``linear_1`` with ``projector_hidden_act="linear"`` (identity) and
  ``linear_2`` the identity matrix, exact; with pixel shuffle there is no standard equivalent (InternVL-hf's
  projector starts with a LayerNorm, LLaVA has no pixel shuffle).
* ``mlp2x_gelu_vocab`` (softmax over the LLM's vocabulary, then its embedding matrix) has none.

Both hosts build the tower with ``AutoModel.from_config(vision_config)`` and read
``hidden_states[vision_feature_layer]``; the feature layer is written as a non-negative index (InternVL-hf takes
``-1`` to mean ``last_hidden_state``, which is after the final LayerNorm of e.g. a ViT, not ``hidden_states[-1]``)
and ``vision_feature_select_strategy`` is ``default`` (drop the first token) exactly when the tower has a CLS
token, as :class:`vlm.models.vision.VisionTower` does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from common.errors import ConfigError
from vlm.exporting import towers


class NoStandardEquivalent(ConfigError):
    """The captioner has a part no standard transformers VLM class can hold."""


@dataclass
class Layout:
    kind: str  # llava | internvl
    feature_layer: int  # non-negative index into the tower's hidden_states
    has_cls: bool
    shuffle: int
    num_image_tokens: int  # per tile

    @property
    def cls_name(self) -> str:
        return {"llava": "LlavaForConditionalGeneration", "internvl": "InternVLForConditionalGeneration"}[self.kind]


def _hidden_states(tower) -> tuple:
    with torch.no_grad():
        x = torch.zeros(1, 3, tower.image_size, tower.image_size, dtype=tower.dtype, device=tower.mean.device)
        return tower.encoder(pixel_values=x, output_hidden_states=True).hidden_states


def plan(cap) -> Layout:
    """The layout for the captioner ``cap`` (:class:`vlm.captioner.Captioner`), or NoStandardEquivalent naming
    what has none."""
    vlm, info = cap.vlm, cap.info
    kind = (info.get("model") or {}).get("projector", {}).get("type", "mlp2x_gelu")
    tower = vlm.vision
    if getattr(vlm.projector, "uses_vocab", False):
        raise NoStandardEquivalent("model.projector.type=mlp2x_gelu_vocab: a projector into the LLM's vocabulary "
                                   "(softmax, then the embedding matrix) has no standard transformers equivalent")
    if info.get("crop"):
        raise NoStandardEquivalent("data.crop=true: the captioner crops each image (its product box, else the central "
                                   "80 %) before resizing; no standard image processor does that crop")
    if kind == "linear" and tower.shuffle > 1:
        raise NoStandardEquivalent(f"model.projector.type=linear with model.vision.pixel_shuffle={tower.shuffle}: "
                                   "LLaVA has no pixel shuffle and InternVL-hf's projector starts with a LayerNorm")
    if kind not in ("linear", "mlp2x_gelu"):
        raise NoStandardEquivalent(f"model.projector.type={kind}: no standard transformers equivalent")
    tiles = info.get("tiles") or {}
    if kind == "linear" and int(tiles.get("max_num", 1)) > 1:
        raise NoStandardEquivalent(f"data.tiles.max_num={tiles['max_num']}: LLaVA's processor does not tile "
                                   "(InternVL tiling exports with model.projector.type=mlp2x_gelu)")
    if kind == "mlp2x_gelu":
        towers.check_internvl(tower.encoder)
    side = tower.image_size // tower.patch_size
    states = _hidden_states(tower)
    n_tokens = states[tower.feature_layer].shape[1]
    if n_tokens not in (side * side, side * side + 1):
        raise NoStandardEquivalent(f"model.vision: {type(tower.encoder).__name__} gives {n_tokens} tokens for a "
                                   f"{side}x{side} patch grid; LLaVA / InternVL-hf take the grid (plus a CLS token)")
    return Layout(kind="llava" if kind == "linear" else "internvl", feature_layer=tower.feature_layer % len(states),
                  has_cls=n_tokens == side * side + 1, shuffle=tower.shuffle, num_image_tokens=vlm.num_image_tokens)


def hf_config(cap, layout: Layout, image_token_id: int, dtype: torch.dtype):
    """The standard class's config: the tower's own config as ``vision_config``, the LLM's as ``text_config``."""
    import copy

    from transformers import InternVLConfig, LlavaConfig

    vlm = cap.vlm
    text = copy.deepcopy(vlm.llm.config)
    vision = copy.deepcopy(_tower(vlm.vision.encoder, layout)[0])
    common = dict(vision_config=vision, text_config=text, image_token_id=image_token_id,
                  vision_feature_layer=layout.feature_layer,
                  vision_feature_select_strategy="default" if layout.has_cls else "full",
                  tie_word_embeddings=bool(vlm.llm.config.tie_word_embeddings))
    if layout.kind == "llava":
        cfg = LlavaConfig(**common, projector_hidden_act="linear", multimodal_projector_bias=True,
                          image_seq_length=layout.num_image_tokens)
    else:
        cfg = InternVLConfig(**common, projector_hidden_act="gelu", downsample_ratio=1.0 / layout.shuffle,
                             image_seq_length=layout.num_image_tokens)
    cfg.dtype = dtype
    cfg.text_config.dtype = cfg.vision_config.dtype = dtype
    return cfg


def _tower(encoder, layout: Layout):
    return (towers.for_llava if layout.kind == "llava" else towers.for_internvl)(encoder)


def _projector_state(projector, layout: Layout) -> dict[str, torch.Tensor]:
    if layout.kind == "llava":  # one Linear: linear_1 = it, act = identity, linear_2 = identity
        w = projector.weight.detach()
        out = w.shape[0]
        return {"linear_1.weight": w, "linear_1.bias": projector.bias.detach(),
                "linear_2.weight": torch.eye(out, dtype=w.dtype), "linear_2.bias": torch.zeros(out, dtype=w.dtype)}
    norm, lin1, _, lin2 = projector
    return {"layer_norm.weight": norm.weight, "layer_norm.bias": norm.bias, "linear_1.weight": lin1.weight,
            "linear_1.bias": lin1.bias, "linear_2.weight": lin2.weight, "linear_2.bias": lin2.bias}


def hf_model(cap, layout: Layout, image_token_id: int, dtype: torch.dtype = torch.float32):
    """The standard model holding the captioner's weights (LoRA already merged into ``cap.vlm.llm``).

    Every tensor of the standard model comes from the captioner, except a head the tower's ``AutoModel`` has
    and the captioner never ran (ViT's pooler): anything else missing is an error, not random weights."""
    from transformers import InternVLForConditionalGeneration, LlavaForConditionalGeneration

    vlm = cap.vlm
    llm = vlm.llm
    if hasattr(llm, "merge_and_unload"):
        raise ValueError("merge the LoRA adapters first (vlm.exporting.writer.merged)")
    cfg = hf_config(cap, layout, image_token_id, dtype)
    cls = LlavaForConditionalGeneration if layout.kind == "llava" else InternVLForConditionalGeneration
    with torch.device("cpu"):
        model = cls(cfg)
    base = getattr(llm, llm.base_model_prefix)
    state = {f"model.vision_tower.{k}": v for k, v in _tower(vlm.vision.encoder, layout)[1].items()}
    state |= {f"model.multi_modal_projector.{k}": v for k, v in _projector_state(vlm.projector, layout).items()}
    state |= {f"model.language_model.{k}": v for k, v in base.state_dict().items()}
    state["lm_head.weight"] = llm.get_output_embeddings().weight
    own = model.state_dict()
    unknown = sorted(set(state) - set(own))
    missing = sorted(k for k in set(own) - set(state) if not k.startswith("model.vision_tower.pooler."))
    if unknown or missing:
        raise ConfigError(f"export: the {layout.cls_name} layout does not match the captioner's weights "
                          f"(unknown {unknown[:3]}, missing {missing[:3]})")
    for k, v in state.items():
        if own[k].shape != v.shape:
            raise ConfigError(f"export: {k} is {tuple(v.shape)} in the captioner, {tuple(own[k].shape)} in {layout.cls_name}")
    model.load_state_dict({k: v.detach().to("cpu", dtype) for k, v in state.items()}, strict=False)
    return model.to(dtype).eval()
