"""Training policy (frozen LLM, LoRA), KV-cache generation, and real HF checkpoints loaded by path."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from omegaconf import OmegaConf

from common.errors import ConfigError
from vlm import policy
from vlm.chat import prompt_ids, user_message


def _fit_steps(module, dm, steps: int = 3) -> None:
    trainer = pl.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=dm)


def _snapshot(module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.vlm.named_parameters()}


def test_freeze_llm_keeps_the_llm_bit_identical_and_only_trainable_groups_get_grads(built):
    cfg, module, dm = built("+exp=freeze_llm")
    before = _snapshot(module)
    # gradients after one backward: only vision and projector have them
    batch = next(iter(dm.train_dataloader()))
    module.vlm(batch["input_ids"], batch["attention_mask"], batch["labels"], batch["pixels"]).backward()
    with_grad = {policy.group_of(n) for n, p in module.vlm.named_parameters() if p.grad is not None}
    assert with_grad == {"vision", "projector"}
    assert all(p.grad is None for p in module.vlm.llm.parameters())
    module.vlm.zero_grad(set_to_none=True)

    _fit_steps(module, dm)
    after = _snapshot(module)
    llm = [n for n in before if n.startswith("llm.")]
    assert llm and all(torch.equal(before[n], after[n]) for n in llm)
    changed = {policy.group_of(n) for n in before if not torch.equal(before[n], after[n])}
    assert changed == {"vision", "projector"}


def test_lora_trains_only_adapter_weights_on_the_llm(built):
    cfg, module, dm = built("+exp=lora", "model.lora.r=4", "model.train_vision=false", "model.train_projector=false")
    before = _snapshot(module)
    trainable = policy.trainable_names(module.vlm)
    assert trainable and all("lora_" in n and n.startswith("llm.") for n in trainable)
    assert not any("lora_" in n for n, _ in module.vlm.vision.named_parameters())
    assert not any("lora_" in n for n, _ in module.vlm.projector.named_parameters())
    _fit_steps(module, dm)
    after = _snapshot(module)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and all("lora_B" in n or "lora_A" in n for n in changed)
    assert any("lora_B" in n for n in changed)  # B starts at zero: it must have moved for LoRA to do anything
    # the export keeps only the adapters
    assert set(policy.trainable_state_dict(module.vlm)) == trainable


def test_lora_with_a_trainable_llm_is_refused(built):
    from common.errors import ConfigError

    with pytest.raises(ConfigError, match="model.train_llm"):
        built("+exp=lora", "model.train_llm=true")


def test_greedy_generation_is_the_same_with_and_without_kv_cache(built):
    torch.manual_seed(0)
    cfg, module, dm = built()
    vlm = module.vlm.eval()
    for p in vlm.llm.parameters():  # random weights: make the LM's choices depend on the image
        p.data.normal_(0, 0.3)
    ids = prompt_ids(vlm.tokenizer, [user_message("Describe the product in the image.")], vlm.num_image_tokens)
    short = prompt_ids(vlm.tokenizer, [user_message("What product is this?")], vlm.num_image_tokens)
    px = torch.rand(3, 3, 64, 64)
    lengths: list[int] = []  # the sequence length of every forward of the LLM's decoder
    hook = vlm.llm.get_decoder().register_forward_pre_hook(
        lambda m, a, kw: lengths.append(next(kw[k] for k in ("inputs_embeds", "input_ids") if kw.get(k) is not None).shape[1]),
        with_kwargs=True)
    cached = vlm.generate(px, [ids, short, ids], max_new_tokens=12, use_cache=True)
    cached_lengths, lengths[:] = lengths[:], []
    plain = vlm.generate(px, [ids, short, ids], max_new_tokens=12, use_cache=False)
    hook.remove()
    assert cached == plain
    # without the cache every step runs the whole sequence again (transformers' generate(inputs_embeds=...,
    # use_cache=False) silently kept a cache: both paths fed one token a step and the "no cache" figure was false)
    assert cached_lengths[1:] == [1] * (len(cached_lengths) - 1)
    assert lengths == list(range(lengths[0], lengths[0] + len(lengths))) and len(lengths) > 1
    assert len({tuple(c) for c in cached}) > 1  # different images/prompts, different answers
    # left padding changes nothing: each prompt alone gives the same tokens as in the batch
    assert vlm.generate(px[1:2], [short], max_new_tokens=12) == [cached[1]]
    assert len(vlm.generate(px, [ids, short, ids], max_new_tokens=12, num_beams=3, use_cache=True)) == 3
    with pytest.raises(ConfigError, match="use_cache=false: only greedy decoding"):
        vlm.generate(px[:1], [ids], max_new_tokens=12, num_beams=3, use_cache=False)


def test_llm_and_vision_load_from_local_hf_checkpoints(built, tmp_path):
    from transformers import (
        Qwen2Config,
        Qwen2ForCausalLM,
        SiglipImageProcessor,
        SiglipVisionConfig,
        SiglipVisionModel,
    )

    from vlm.models.llm import train_tokenizer

    tok = train_tokenizer(["A shoe by Zorvik.", "Describe the product in the image."], 300)
    tok.add_special_tokens({})  # the saved tokenizer is what a real checkpoint ships
    llm_dir = tmp_path / "qwen"
    lm = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok), hidden_size=48, intermediate_size=96, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=1, eos_token_id=tok.eos_token_id))
    lm.save_pretrained(llm_dir)
    tok.save_pretrained(llm_dir)
    vis_dir = tmp_path / "siglip"
    SiglipVisionModel(SiglipVisionConfig(image_size=32, patch_size=8, hidden_size=40, intermediate_size=80,
                                         num_hidden_layers=2, num_attention_heads=2)).save_pretrained(vis_dir)
    # a real checkpoint ships its preprocessing (mean, std, size)
    SiglipImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.4, 0.5, 0.6]).save_pretrained(vis_dir)
    cfg, module, dm = built(f"model.llm.name_or_path={llm_dir}", f"model.vision.name_or_path={vis_dir}",
                            "model.vision.feature_layer=-2")
    vlm = module.vlm
    assert vlm.llm.config.hidden_size == 48 and vlm.vision.encoder.config.hidden_size == 40
    assert vlm.vision.image_size == 32 and vlm.num_image_tokens == 4  # 16 patches, pixel shuffle 2
    assert vlm.vision.mean.flatten().tolist() == pytest.approx([0.4, 0.5, 0.6])
    assert torch.equal(vlm.llm.model.layers[0].mlp.up_proj.weight, lm.model.layers[0].mlp.up_proj.weight)
    batch = next(iter(dm.train_dataloader()))
    assert batch["pixels"].shape[-1] == 32
    loss = vlm(batch["input_ids"], batch["attention_mask"], batch["labels"], batch["pixels"])
    assert torch.isfinite(loss)


def test_a_missing_checkpoint_dir_is_a_config_error(built, tmp_path):
    from common.errors import ConfigError

    with pytest.raises(ConfigError, match=r"model.llm.name_or_path: no such directory"):
        built(f"model.llm.name_or_path={tmp_path / 'nope'}")


def test_unused_schema_key_is_rejected(vlm_cfg):
    from common.config import validate
    from common.errors import ConfigError
    from vlm.schemas import SCHEMAS

    composed = vlm_cfg("logger=none")
    with pytest.raises(Exception, match="rank"):  # the composed node is typed by its schema already
        composed.model.lora.rank = 8
    cfg = OmegaConf.create(OmegaConf.to_container(composed))  # what an untyped (hand-built) config gets
    cfg.model.lora.rank = 8
    with pytest.raises(ConfigError, match=r"^model.lora.rank: unknown key"):
        validate(cfg, SCHEMAS)
