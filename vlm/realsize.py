"""Real-size random-weight towers and what training / generating with them costs (``python -m vlm.bench --real-size``).

The towers are built from their configs with the real hyper-parameters (random weights, no hub: the compute and
the memory are those of the real checkpoints), saved with ``save_pretrained`` in bf16 like the released
checkpoints, and loaded back by path through the same code as a user's run (``model.vision.name_or_path`` /
``model.llm.name_or_path`` -> ``policy.build_vlm``: dtype policy, freeze / LoRA, fp32 trainables, param groups).

* ``ensure_towers(scale, cache_dir)``: the saved vision + LLM dirs (cached by config; ``scale="tiny"`` the same
  configs shrunk, for tests);
* ``step_row``: mean step time (forward + backward + AdamW) of N steps after one warm-up, peak memory,
  trainable / total parameters, for one policy and batch size;
* ``generation_row``: captions/s of batched greedy generation through ``VLM.generate`` with / without KV cache;
* ``fit``: whether a policy fits ``gpus`` x ``gpu_gb`` at a global batch from parameter-count arithmetic plus the
  measured per-sample activation memory; ``lines``: the Markdown section.
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import torch

from common.cache import build_once, content_hash
from vlm.chat import encode, prompt_ids, user_message

# InternViT-300M-448px-V2_5 (the vision tower of InternVL2.5-1B/2B/4B), as transformers' native InternVL-hf
# vision config: its config.json has hidden_size 1024, num_hidden_layers 24, num_attention_heads 16,
# intermediate_size 4096, patch_size 14, image_size 448, qkv_bias true, qk_normalization false,
# norm_type layer_norm, layer_norm_eps 1e-6, hidden_act gelu, initializer_factor 0.1 (the layer scale);
# InternVL3-1B-hf's vision_config writes the same as attention_bias true, use_qk_norm false, layer_scale_init_value
# 0.1, use_mean_pooling true. InternVL: select_layer -1, downsample_ratio 0.5 (pixel shuffle factor 2):
# 32 x 32 patches -> 256 tokens of width 4096 a 448 tile, mlp1 = LayerNorm(4096) + Linear(4096, llm) + GELU +
# Linear(llm, llm) (this repo's mlp2x_gelu). Mean / std: ImageNet's (InternVL's preprocessor).
VISION = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
              patch_size=14, image_size=448, attention_bias=True, use_qk_norm=False, norm_type="layer_norm",
              layer_norm_eps=1e-6, hidden_act="gelu", layer_scale_init_value=0.1, use_mean_pooling=True)
# Qwen2.5-1.5B(-Instruct) config.json: hidden_size 1536, num_hidden_layers 28, num_attention_heads 12,
# num_key_value_heads 2, intermediate_size 8960, vocab_size 151936, tie_word_embeddings true, rope_theta 1e6,
# rms_norm_eps 1e-6, hidden_act silu, max_position_embeddings 32768.
LLM = dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
           intermediate_size=8960, vocab_size=151936, tie_word_embeddings=True, rms_norm_eps=1e-6,
           hidden_act="silu", max_position_embeddings=32768, rope_theta=1e6)
# The same shapes shrunk, for tests (seconds): 56 px = 4 x 4 patches -> 4 tokens a tile; the LLM wide enough that
# LoRA r=64 is still smaller than the LLM (freeze_llm < lora < full_ft trainables, as at real size).
TINY_VISION = {**VISION, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
               "intermediate_size": 64, "image_size": 56}
TINY_LLM = {**LLM, "hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "intermediate_size": 512, "vocab_size": 1024, "max_position_embeddings": 2048}
SCALES = {"real": (VISION, LLM), "tiny": (TINY_VISION, TINY_LLM)}
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
TOKENIZER_VOCAB = 1000  # a byte-level BPE on the caption corpus; its ids are < the LLM's vocab (151936)

# python -m vlm.bench --real-size --policies NAME -> the job's overrides (exp files of conf/vlm/exp).
POLICIES = {
    "freeze_llm": ["+exp=freeze_llm"],
    "lora": ["+exp=lora", "model.lora.r=64"],  # all linear layers, alpha = 2r = 128
    "lora_qk": ["+exp=lora_qk", "model.lora.r=64"],
    "full_ft": ["+exp=full_ft"],
}
PROMPT = "Describe the product in the image."


def ensure_towers(scale: str, cache_dir: str | Path) -> tuple[Path, Path]:
    """``(vision dir, llm dir)``: random-weight towers with the real (or shrunk) configs, saved in bf16 with a
    ``preprocessor_config.json`` / tokenizer as the released checkpoints are; cached by config under
    ``<cache_dir>/vlm/real-size-<hash>`` (real scale: ~0.6 + 3.1 GB)."""
    vision, llm = SCALES[scale]
    root = Path(cache_dir) / "vlm" / f"real-size-{content_hash(json.dumps([vision, llm, TOKENIZER_VOCAB, 1]))}"

    def build(tmp: Path) -> None:
        from transformers import InternVLVisionConfig, InternVLVisionModel, Qwen2Config, Qwen2ForCausalLM

        from vlm import synth
        from vlm.models.llm import train_tokenizer

        torch.manual_seed(0)
        vc = InternVLVisionConfig(**{k: v for k, v in vision.items() if k not in ("image_size", "patch_size")},
                                  image_size=[vision["image_size"]] * 2, patch_size=[vision["patch_size"]] * 2)
        InternVLVisionModel._from_config(vc, dtype=torch.bfloat16).save_pretrained(tmp / "vision")
        size = vision["image_size"]
        (tmp / "vision" / "preprocessor_config.json").write_text(json.dumps(
            {"image_processor_type": "GotOcr2ImageProcessor", "image_mean": MEAN, "image_std": STD,
             "size": {"height": size, "width": size}, "do_center_crop": False, "crop_to_patches": False}))
        tok = train_tokenizer(synth.caption_corpus(), TOKENIZER_VOCAB)
        kw = {k: v for k, v in llm.items() if k != "rope_theta"}
        qc = Qwen2Config(**kw, rope_parameters={"rope_type": "default", "rope_theta": llm["rope_theta"]},
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None)
        Qwen2ForCausalLM._from_config(qc, dtype=torch.bfloat16).save_pretrained(tmp / "llm")
        tok.save_pretrained(tmp / "llm")

    build_once(root, build, f"random-weight {scale}-size towers")
    return root / "vision", root / "llm"


def overrides(policy: str, vision_dir: Path, llm_dir: Path, grad_ckpt: bool) -> list[str]:
    """The command-line overrides of a user's run on these towers (the LLM kept in bf16, as the team runs it)."""
    return [*POLICIES[policy], f"model.vision.name_or_path={vision_dir}", f"model.llm.name_or_path={llm_dir}",
            "model.llm.dtype=bf16", "model.vision.dtype=bf16", f"model.gradient_checkpointing={str(grad_ckpt).lower()}"]


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _available_bytes(device: str) -> int:
    if device == "cuda":
        return int(torch.cuda.mem_get_info()[0])
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 1 << 62


def _counts(vlm) -> dict[str, int]:
    total = sum(p.numel() for p in vlm.parameters())
    trainable = sum(p.numel() for p in vlm.parameters() if p.requires_grad)
    by = {g: sum(p.numel() for n, p in vlm.named_parameters() if n.split(".", 1)[0] == g)
          for g in ("vision", "projector", "llm")}
    return {"total": total, "trainable": trainable, "frozen": total - trainable, **{f"{g}_params": v for g, v in by.items()}}


def _batch(vlm, batch: int, device: str) -> dict[str, torch.Tensor]:
    from vlm import synth

    caption = synth.caption_corpus()[len(synth.PROMPTS) + 1]
    enc = encode(vlm.tokenizer, [user_message(PROMPT), {"role": "assistant", "content": caption}], vlm.num_image_tokens)
    ids = torch.tensor([enc.input_ids] * batch, device=device)
    size = vlm.vision.image_size
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.tensor([enc.labels] * batch, device=device),
            "pixels": torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)}


def timed_steps(vlm, b: dict, opt, steps: int, warmup: int, device: str, bf16: bool = False) -> list[float]:
    """Seconds of each of ``steps`` training steps (forward, backward, optimizer step) after ``warmup`` untimed ones."""
    times = []
    for i in range(warmup + steps):
        t = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            loss = vlm(b["input_ids"], b["attention_mask"], b["labels"], b["pixels"])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return times


def step_row(cfg, policy: str, batch: int, steps: int) -> dict:
    """One policy x batch size: ``steps`` timed steps after one warm-up, in the calling process (run it in a fresh
    process for its own peak RSS). A row whose gradients + AdamW states cannot fit the free memory is skipped
    (its parameter counts still given)."""
    from vlm import policy as policy_lib

    device = _device()
    t = time.perf_counter()
    vlm = policy_lib.build_vlm(cfg.model, cfg.model.llm.name_or_path)
    build_s = time.perf_counter() - t
    counts = _counts(vlm)
    row = {"policy": policy, "batch": batch, "steps": steps, "device": device, "build_s": build_s, **counts,
           "grad_ckpt": bool(cfg.model.gradient_checkpointing), "skipped": None}
    need = 12 * counts["trainable"] + (2 << 30)  # fp32 grads + two AdamW moments, 2 GiB of headroom
    if device == "cuda":
        vlm.to(device)
    free = _available_bytes(device)
    if need > free:
        row["skipped"] = f"needs > {need / 2**30:.0f} GiB more for grads + AdamW, {free / 2**30:.0f} GiB free"
        row["rss_built_mb"] = _rss_mb()
        return row
    vlm.train()
    for m in vlm.frozen_modules:
        m.eval()
    groups = policy_lib.param_groups(vlm, float(cfg.optim.lr), float(cfg.optim.weight_decay), cfg.lr_groups)
    opt = torch.optim.AdamW(groups, lr=float(cfg.optim.lr))
    b = _batch(vlm, batch, device)
    row["seq_len"] = int(b["input_ids"].shape[1])
    row["image_tokens"] = int(vlm.num_image_tokens)
    row["rss_built_mb"] = _rss_mb()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = timed_steps(vlm, b, opt, steps, warmup=1, device=device, bf16=device == "cuda")  # trainer=gpu: bf16-mixed
    row["s_per_step"] = sum(times) / len(times)
    row["peak_rss_mb"] = _rss_mb()
    if device == "cuda":
        row["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return row


def generation_row(cfg, batch: int, new_tokens: int) -> dict:
    """Captions/s of ``VLM.generate`` (greedy, ``new_tokens`` forced: the random LLM would stop anywhere) with and
    without the KV cache, the LLM frozen in bf16 as at evaluation."""
    from vlm import policy as policy_lib

    device = _device()
    vlm = policy_lib.build_vlm(cfg.model, cfg.model.llm.name_or_path).to(device).eval()
    ids = prompt_ids(vlm.tokenizer, [user_message(PROMPT)], vlm.num_image_tokens)
    size = vlm.vision.image_size
    px = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    row = {"batch": batch, "new_tokens": new_tokens, "prompt_len": len(ids), "device": device}
    for cache in (True, False):
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            vlm.llm.generation_config.min_new_tokens = 2
            # warm-up at the timed batch: CPU kernels are set up per shape, the first call of a shape pays for it
            vlm.generate(px, [ids] * batch, max_new_tokens=2, use_cache=cache)
            vlm.llm.generation_config.min_new_tokens = new_tokens
            t = time.perf_counter()
            out = vlm.generate(px, [ids] * batch, max_new_tokens=new_tokens, use_cache=cache)
            if device == "cuda":
                torch.cuda.synchronize()
            dt = time.perf_counter() - t
        key = "cache" if cache else "no_cache"
        row[f"{key}_s"] = dt
        row[f"{key}_captions_per_s"] = batch / dt
        row[f"{key}_tokens_per_s"] = sum(len(o) for o in out) / dt
    row["peak_rss_mb"] = _rss_mb()
    return row


# --------------------------------------------------------------------------------------------- fit estimate
GIB = 2**30


def activation_per_sample(rows: list[dict], policy: str) -> float | None:
    """Bytes per sample: the slope of peak memory over batch size (smallest vs largest batch measured)."""
    ok = sorted((r for r in rows if r["policy"] == policy and not r["skipped"]), key=lambda r: r["batch"])
    if len(ok) < 2 or ok[0]["batch"] == ok[-1]["batch"]:
        return None
    key = "peak_cuda_mb" if "peak_cuda_mb" in ok[0] else "peak_rss_mb"
    slope = (ok[-1][key] - ok[0][key]) * 2**20 / (ok[-1]["batch"] - ok[0]["batch"])
    return max(slope, 0.0)


def static_bytes(frozen: int, trainable: int, shards: int = 1) -> float:
    """bf16 frozen weights + fp32 trainable weights + fp32 grads and two fp32 AdamW moments (sharded by ZeRO-2)."""
    return 2 * frozen + 4 * trainable + (4 + 8) * trainable / shards


def fit(frozen: int, trainable: int, act: float | None, gpus: int = 2, gpu_gb: float = 24, global_batch: int = 24,
        reserve_gb: float = 1.5) -> dict:
    """Largest per-GPU micro-batch (a divisor of global_batch / gpus) that fits, for DDP and ZeRO-2."""
    per_gpu = global_batch // gpus
    budget = (gpu_gb - reserve_gb) * GIB
    out = {}
    for name, shards in (("ddp", 1), ("zero2", gpus)):
        s = static_bytes(frozen, trainable, shards)
        out[f"{name}_static_gb"] = s / GIB
        if act is None:
            out[f"{name}_micro"] = None if s <= budget else 0
            continue
        fits = [m for m in range(1, per_gpu + 1) if per_gpu % m == 0 and s + m * act <= budget]
        out[f"{name}_micro"] = max(fits) if fits else 0
    out["per_gpu"] = per_gpu
    return out


def _m(n: int) -> str:
    return f"{n / 1e6:,.1f}"


def _fit_cell(micro, per_gpu: int, static_gb: float, budget_gb: float) -> str:
    if micro is None:
        return f"state fits ({static_gb:.1f} GB); activations not measured"
    if micro == 0:
        return f"**no** ({static_gb:.1f} GB static)" if static_gb > budget_gb else "**no** (1 sample's activations too big)"
    return f"yes: micro-batch {micro} x {per_gpu // micro} accumulation"


def lines(rows: list[dict], gen: dict | None, command: str, machine: str, scale: str, gpus: int = 2, gpu_gb: float = 24,
          global_batch: int = 24) -> list[str]:
    ckpt = rows[0]["grad_ckpt"] if rows else False
    dev = rows[0]["device"] if rows else "cpu"
    mem = "peak CUDA allocated, MB" if dev == "cuda" else "peak RSS, MB"
    out = ["## Real size (random weights)", "",
           f"command: `{command}`  ", f"machine: {machine}", "",
           (("InternViT-300M-448px-V2_5-class vision (transformers' `InternVLVisionModel`, 24 x 1024, 448 px, pixel "
             "shuffle 2: 256 tokens a tile) + mlp2x_gelu projector + Qwen2.5-1.5B-class LLM (`Qwen2ForCausalLM`, "
             "28 x 1536, vocab 151936), random weights saved in bf16 and loaded by `model.vision.name_or_path` / "
             "`model.llm.name_or_path` with `model.llm.dtype=bf16` (trainable parameters fp32, `vlm.policy`)"
             if scale == "real" else f"**scale {scale}**: the real configs shrunk (a test of the code path, not figures)")
            + f"; one tile an image, gradient checkpointing {'on' if ckpt else 'off'}, "
            + ("bf16 autocast (as trainer=gpu)." if dev == "cuda" else "fp32 trainables, frozen LLM in bf16 (as trainer=cpu).")
            + " LoRA: r 64, alpha 128, all linear layers (lora_qk: q/k only); full_ft trains the LLM in fp32 too."), "",
           f"| policy | batch | step, s (mean of N after 1 warm-up) | {mem} | of it after the build, MB | "
           "trainable params, M | total params, M | sequence (image tokens) |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["skipped"]:
            out.append(f"| {r['policy']} | {r['batch']} | skipped: {r['skipped']} | | {r['rss_built_mb']:.0f} | "
                       f"{_m(r['trainable'])} | {_m(r['total'])} | |")
            continue
        peak = r.get("peak_cuda_mb", r["peak_rss_mb"])
        out.append(f"| {r['policy']} | {r['batch']} | {r['s_per_step']:.2f} (N={r['steps']}) | {peak:.0f} | "
                   f"{r['rss_built_mb']:.0f} | {_m(r['trainable'])} | {_m(r['total'])} | {r['seq_len']} ({r['image_tokens']}) |")
    budget = gpu_gb - 1.5
    out += ["", f"Does the team's setting fit: {gpus} x {gpu_gb:g} GB GPUs at global batch {global_batch} "
            f"({global_batch // gpus} samples per GPU per optimizer step)?", "",
            "| policy | static per GPU, DDP, GB | static per GPU, ZeRO-2, GB | activations per sample, GB (measured) | "
            "DDP | ZeRO-2 |", "|---|---|---|---|---|---|"]
    seen = []
    for r in rows:
        if r["policy"] in seen:
            continue
        seen.append(r["policy"])
        act = activation_per_sample(rows, r["policy"])
        f = fit(r["frozen"], r["trainable"], act, gpus, gpu_gb, global_batch)
        act_s = f"{act / GIB:.2f}" if act is not None else "not measured"
        out.append(f"| {r['policy']} | {f['ddp_static_gb']:.1f} | {f['zero2_static_gb']:.1f} | {act_s} | "
                   f"{_fit_cell(f['ddp_micro'], f['per_gpu'], f['ddp_static_gb'], budget)} | "
                   f"{_fit_cell(f['zero2_micro'], f['per_gpu'], f['zero2_static_gb'], budget)} |")
    out += ["", f"Static = 2 P_frozen (bf16) + 4 P_train (fp32 weights) + (4 + 8) P_train / Z (fp32 grads + AdamW m, v; "
            f"Z = 1 for DDP, {gpus} for ZeRO-2, which shards grads and optimizer states). A micro-batch m fits when "
            f"static + m x activations per sample <= {gpu_gb:g} - 1.5 GB (CUDA context, fragmentation); "
            f"accumulation = {global_batch // gpus} / m. Activations per sample = (peak at the largest batch - peak at "
            "the smallest) / (batch difference) of the same policy, "
            + ("CUDA allocated bytes" if dev == "cuda" else
               "peak RSS on CPU: fp32 for the trainable tower (bf16 under autocast on a GPU, so an upper bound)")
            + f", gradient checkpointing {'on' if ckpt else 'off (run with --grad-ckpt for the checkpointed figure)'}. "
            "Without two batch sizes of a policy the activations are not included."]
    if gen:
        out += ["", f"| recall-evaluation generation (greedy, `VLM.generate`, batch {gen['batch']}, "
                f"{gen['new_tokens']} new tokens forced, prompt {gen['prompt_len']} tokens) | with KV cache | without KV cache |",
                "|---|---|---|",
                f"| captions/s | {gen['cache_captions_per_s']:.3f} | {gen['no_cache_captions_per_s']:.3f} |",
                f"| tokens/s | {gen['cache_tokens_per_s']:.1f} | {gen['no_cache_tokens_per_s']:.1f} |",
                f"| seconds for the batch | {gen['cache_s']:.1f} | {gen['no_cache_s']:.1f} |"]
        if gen["new_tokens"] < 200:
            out.append(f"\n{gen['new_tokens']} new tokens, not the recall evaluation's 200 (`--new-tokens`): without "
                       "the cache each token re-reads the whole sequence, so the gap grows with the caption length.")
    return out


def replace_section(text: str, section: list[str]) -> str:
    """``text`` with its ``## Real size (random weights)`` section (up to the next ``## ``) replaced, or appended."""
    head = section[0]
    body = "\n".join(section).rstrip("\n") + "\n"
    if head not in text:
        return text.rstrip("\n") + "\n\n" + body
    before, rest = text.split(head, 1)
    nxt = rest.find("\n## ")
    after = rest[nxt + 1:] if nxt >= 0 else ""
    return before + body + ("\n" + after if after else "")
