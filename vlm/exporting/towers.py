"""The vision tower in the form a standard VLM builds it from ``vision_config``.

LLaVA builds any tower ``AutoModel.from_config`` knows (ViT, SigLIP, CLIP, InternVL-hf vision ...) and reads its
``hidden_states``: the tower goes as it is. InternVL-hf always builds ``InternVLVisionModel`` (its
``vision_config`` is an ``InternVLVisionConfig`` whatever the saved ``model_type``), so a tower of another class
must be rewritten as one: the embedded tiny ViT is the same pre-norm transformer (CLS + absolute position
embeddings, LayerNorm -> attention -> residual, LayerNorm -> MLP -> residual) and converts exactly, with layer
scales of 1; any other class is an error naming it.
"""

from __future__ import annotations

import torch

from common.errors import ConfigError


def _vit_as_internvl(encoder):
    from transformers import InternVLVisionConfig

    vc = encoder.config
    cfg = InternVLVisionConfig(
        hidden_size=vc.hidden_size, num_hidden_layers=vc.num_hidden_layers, num_attention_heads=vc.num_attention_heads,
        intermediate_size=vc.intermediate_size, hidden_act=vc.hidden_act, image_size=vc.image_size,
        patch_size=vc.patch_size, num_channels=vc.num_channels, layer_norm_eps=vc.layer_norm_eps,
        attention_bias=bool(vc.qkv_bias), use_qk_norm=False, layer_scale_init_value=1.0, norm_type="layer_norm",
        use_absolute_position_embeddings=True, use_mean_pooling=False, use_mask_token=False,
        hidden_dropout_prob=0.0, attention_dropout=0.0, projection_dropout=0.0,
    )
    state = {}
    for k, v in encoder.state_dict().items():  # ViT's layers.N.attention.{q,k,v,o}_proj, mlp.fc1/fc2, layernorm_*
        if k.startswith("pooler."):
            continue
        if k.startswith("layers."):
            k = "encoder.layer." + k.removeprefix("layers.").replace(".attention.o_proj.", ".attention.projection_layer.")
        state[k] = v
    for i in range(vc.num_hidden_layers):
        for lam in ("lambda_1", "lambda_2"):
            state[f"encoder.layer.{i}.{lam}"] = torch.ones(vc.hidden_size, dtype=encoder.dtype)
    return cfg, state


INTERNVL_HOSTS = ("InternVLVisionModel", "ViTModel")


def check_internvl(encoder) -> None:
    """ConfigError naming the tower's class when InternVL-hf cannot hold it."""
    name = type(encoder).__name__
    if name not in INTERNVL_HOSTS:
        raise ConfigError(f"model.vision: InternVL-hf builds its tower as InternVLVisionModel; {name} has no exact "
                      "equivalent there (export it without pixel shuffle and with model.projector.type=linear "
                      "for the LLaVA layout, which hosts any AutoModel tower)")


def for_internvl(encoder):
    """``(InternVLVisionConfig, state dict of InternVLVisionModel)`` holding ``encoder``'s computation."""
    check_internvl(encoder)
    if type(encoder).__name__ == "InternVLVisionModel":
        return encoder.config, encoder.state_dict()
    return _vit_as_internvl(encoder)


def for_llava(encoder):
    """``(vision config, state dict)``: LLaVA's ``AutoModel.from_config`` rebuilds the tower as it is."""
    return encoder.config, encoder.state_dict()
