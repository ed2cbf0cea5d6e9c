"""Real-size whole VLMs with random weights (``model=hf_vlm``): ``python -m vlm.realsize_hf``.

Two classes of the team's off-the-shelf VLMs, built by transformers from their real configurations (random
weights, bf16), saved with ``save_pretrained`` together with the family's real processor class, and trained exactly
as ``python -m vlm.train model=hf_vlm model.name_or_path=<dir>`` trains them (``vlm.policy.build_hf_vlm``: LoRA on
the language model / the freeze policy; ``vlm.hf_data``: the processor's chat template, assistant-only labels):

* ``llava_next_7b``: llava-v1.6-mistral-7b-hf-class (CLIP ViT-L/14-336 + Mistral-7B, anyres grid pinpoints);
* ``internvl2_5_4b``: InternVL2_5-4B-MPO-hf-class (InternViT-300M-448px + Qwen2.5-3B, pixel shuffle 0.5).

The tokenizer is a small byte-level BPE (its ids fall inside the real vocabulary; the embedding matrices have the
real size), so sequence lengths are the real image-token counts plus a short caption. Each row runs in a fresh
process (its own peak RSS): parameter counts are always given; a row whose weights, gradients and AdamW states do
not fit the free memory is skipped with the arithmetic, and on CPU a ``--steps 0`` row gives counts only.

    python -m vlm.realsize_hf [--families llava_next_7b,internvl2_5_4b] [--policies lora,freeze] [--steps 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from vlm.realsize import _available_bytes, _rss_mb

ROOT = Path(__file__).resolve().parent.parent
POLICIES = {  # the overlays' settings (conf/vlm/exp/hf_vlm_lora.yaml, hf_vlm_freeze.yaml)
    "lora": {"lora": {"enabled": True, "r": 64, "alpha": 128}, "train_vision": False},
    "freeze": {"lora": {"enabled": False}, "train_vision": True},
}
CAPTION = "A black leather handbag with a gold chain strap by Chanel."
PROMPT = "Describe the product in the image."


def bpe_tokenizer(specials: list[str], eos: str, named: dict[str, str] | None = None, texts: list[str] | None = None,
                  vocab_size: int = 300):
    """A small byte-level BPE trained on ``texts`` with the family's special tokens (``named``: the processor's
    named ones, e.g. InternVL's ``context_image_token``): what a replica needs in place of the real tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", *specials],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([*(texts or [CAPTION, PROMPT]), "user\n", "assistant\n", "USER: ", "ASSISTANT:"], trainer=trainer)
    kw = {"extra_special_tokens": named} if named else {}
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, pad_token="<pad>", **kw)


# chat templates in the families' shapes (the test replicas use them too): LLaVA's USER/ASSISTANT turns, InternVL's ChatML
LLAVA_TEMPLATE = (
    "{% for message in messages %}{{ message['role'].upper() + ': ' }}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}{{ '<image>\n' }}{% endif %}{% endfor %}"
    "{% for c in message['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}"
    "{% if message['role'] == 'assistant' %}{{ '</s>' }}{% endif %}{{ ' ' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
INTERNVL_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<IMG_CONTEXT>\n"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def llava_next_7b():
    """llava-v1.6-mistral-7b-hf's configuration (CLIP ViT-L/14-336, Mistral-7B, its grid pinpoints)."""
    from transformers import (
        CLIPVisionConfig,
        LlavaNextConfig,
        LlavaNextImageProcessor,
        LlavaNextProcessor,
        MistralConfig,
    )

    tok = bpe_tokenizer(["</s>", "<image>"], "</s>")
    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                              image_size=336, patch_size=14, projection_dim=768, hidden_act="quick_gelu")
    text = MistralConfig(vocab_size=32064, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=32768,
                         rope_theta=1e6, sliding_window=None, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    pins = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
    cfg = LlavaNextConfig(vision_config=vision, text_config=text, image_token_id=tok.convert_tokens_to_ids("<image>"),
                          image_grid_pinpoints=pins, vision_feature_layer=-2, vision_feature_select_strategy="default")
    ip = LlavaNextImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336},
                                 image_grid_pinpoints=pins)
    proc = LlavaNextProcessor(image_processor=ip, tokenizer=tok, patch_size=14, vision_feature_select_strategy="default",
                              num_additional_image_tokens=1, chat_template=LLAVA_TEMPLATE)
    return cfg, proc, (672, 672)


def internvl2_5_4b():
    """InternVL2_5-4B-MPO-hf's configuration (InternViT-300M-448px-V2_5, Qwen2.5-3B, 256 tokens a 448-px tile)."""
    from transformers import (
        GotOcr2ImageProcessor,
        InternVLConfig,
        InternVLProcessor,
        InternVLVideoProcessor,
        InternVLVisionConfig,
        Qwen2Config,
    )

    named = {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
             "video_token": "<video>"}
    tok = bpe_tokenizer(["<|im_start|>", "<|im_end|>", *named.values()], "<|im_end|>", named)
    vision = InternVLVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                                  image_size=448, patch_size=14, norm_type="layer_norm", use_qk_norm=False)
    text = Qwen2Config(vocab_size=151674, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
                       num_attention_heads=16, num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1e6,
                       tie_word_embeddings=False, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    cfg = InternVLConfig(vision_config=vision, text_config=text, image_token_id=tok.convert_tokens_to_ids("<IMG_CONTEXT>"),
                         downsample_ratio=0.5, projector_hidden_act="gelu", tie_word_embeddings=False)
    size = {"height": 448, "width": 448}
    proc = InternVLProcessor(image_processor=GotOcr2ImageProcessor(size=size, max_patches=12, crop_to_patches=False),
                             tokenizer=tok, video_processor=InternVLVideoProcessor(size=size), image_seq_length=256,
                             chat_template=INTERNVL_TEMPLATE)
    return cfg, proc, (448, 448)


FAMILIES = {"llava_next_7b": llava_next_7b, "internvl2_5_4b": internvl2_5_4b}


def ensure(family: str, cache_dir: Path) -> Path:
    """The random-weight real-size VLM + processor saved under ``cache_dir`` (built once, bf16)."""
    from transformers import AutoModelForImageTextToText

    out = cache_dir / f"hf-real-size-{family}"
    if (out / "config.json").is_file() and any(out.glob("*.safetensors")):
        return out
    cfg, proc, _ = FAMILIES[family]()
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_config(cfg, dtype=torch.bfloat16)
    model.generation_config.eos_token_id = proc.tokenizer.eos_token_id
    model.generation_config.pad_token_id = proc.tokenizer.pad_token_id
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp)
    proc.save_pretrained(tmp)
    tmp.rename(out)
    return out


def row(family: str, policy: str, folder: Path, steps: int) -> dict:
    """One family x policy in this process: build as vlm.train does, then ``steps`` timed steps after a warm-up."""
    from omegaconf import OmegaConf
    from PIL import Image

    from vlm import policy as policy_lib
    from vlm.data import Record
    from vlm.hf_data import HfCaptionDataset, collate
    from vlm.schemas import HfVlmSchema

    node = OmegaConf.merge(OmegaConf.structured(HfVlmSchema), {"name_or_path": str(folder), "dtype": "bf16"},
                           POLICIES[policy])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    t = time.perf_counter()
    if steps <= 0:  # counts only: the same model and policy on the meta device (no weights, no disk)
        from transformers import AutoModelForImageTextToText

        from vlm.models.hf_vlm import HfVLM

        cfg, proc, _ = FAMILIES[family]()
        with torch.device("meta"):
            vlm = HfVLM(AutoModelForImageTextToText.from_config(cfg, dtype=torch.bfloat16), proc)
            policy_lib.apply_hf_policy(vlm, node)
    else:
        vlm = policy_lib.build_hf_vlm(node)
    out = {"family": family, "policy": policy, "device": device, "build_s": time.perf_counter() - t,
           **policy_lib.count_params(vlm, group_of=vlm.group_of), "skipped": None}
    out["trainable"] = sum(p.numel() for p in vlm.parameters() if p.requires_grad)
    out["total"] = sum(p.numel() for p in vlm.parameters())
    need = 16 * out["trainable"] + (3 << 30)  # fp32 weights, grads, two AdamW moments + headroom
    if steps <= 0 or need > _available_bytes(device):
        out["skipped"] = ("counts only, built on the meta device (--counts-only / --steps 0)" if steps <= 0 else
                          f"needs > {need / 2**30:.0f} GiB more for the trainables' states, {_available_bytes(device) / 2**30:.0f} GiB free")
        out["rss_mb"] = _rss_mb()
        return out
    _, _, size = FAMILIES[family]()
    image = Image.new("RGB", size, (120, 80, 40))
    path = folder / "bench.png"
    image.save(path)
    rec = Record(id="r0", image=str(path), brand="Chanel", kind="LOGO",
                 messages=[{"role": "user", "content": f"<image>\n{PROMPT}"}, {"role": "assistant", "content": CAPTION}])
    batch = collate(vlm.processor, None, train=True)([HfCaptionDataset([rec], vlm.processor)[0]])
    inputs = {k: v.to(device) for k, v in batch["inputs"].items()}
    labels = batch["labels"].to(device)
    out["seq_len"] = int(inputs["input_ids"].shape[1])
    out["image_tokens"] = int((inputs["input_ids"] == vlm.hf.config.image_token_id).sum())
    vlm.to(device).train()
    for m in vlm.frozen_modules:
        m.eval()
    opt = torch.optim.AdamW(policy_lib.param_groups(vlm, 1e-4, 0.0, {}, group_of=vlm.group_of), lr=1e-4)
    times = []
    for i in range(1 + steps):
        t = time.perf_counter()
        loss = vlm(inputs, labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - t)
    out.update(s_per_step=sum(times) / len(times), steps=steps, loss=float(loss), rss_mb=_rss_mb())
    if device == "cuda":
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def _m(n: int) -> str:
    return f"{n / 1e6:,.1f}"


def table(rows: list[dict], command: str, machine: str) -> list[str]:
    lines = ["## Real size, whole VLMs (`model=hf_vlm`, random weights)", "", f"command: `{command}`  ",
             f"machine: {machine}", "",
             "Built by transformers from the real configurations (bf16 storage, trainables fp32 as `vlm.policy` keeps "
             "them), saved with `save_pretrained` + the family's processor, loaded and trained as `vlm.train "
             "model=hf_vlm` does; batch 1, one product photo (LLaVA-NeXT: 672 x 672, anyres 2 x 2 grid + base; "
             "InternVL: one 448-px tile) and a 14-word caption. lora: r 64, alpha 128 on all linear layers of the "
             "language model, projector trains; freeze: language model frozen, vision tower + projector train.", "",
             "| model | policy | step, s | peak RSS / CUDA, MB | trainable params, M | total params, M | vision / projector / LLM, M | sequence (image tokens) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        parts = f"{_m(r['vision'])} / {_m(r['projector'])} / {_m(r['llm'])}"
        if r["skipped"]:
            lines.append(f"| {r['family']} | {r['policy']} | not timed: {r['skipped']} | {r['rss_mb']:.0f} | "
                         f"{_m(r['trainable'])} | {_m(r['total'])} | {parts} | |")
            continue
        mem = r.get("peak_cuda_mb", r["rss_mb"])
        lines.append(f"| {r['family']} | {r['policy']} | {r['s_per_step']:.1f} (N={r['steps']}) | {mem:.0f} | "
                     f"{_m(r['trainable'])} | {_m(r['total'])} | {parts} | {r['seq_len']} ({r['image_tokens']}) |")
    return [*lines, ""]


BEGIN, END = "<!-- real-size hf_vlm: python -m vlm.realsize_hf -->", "<!-- end real-size hf_vlm -->"


def main(argv=None) -> int:
    from common.bench import machine, write_section

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", default="internvl2_5_4b,llava_next_7b")
    p.add_argument("--policies", default="lora,freeze")
    p.add_argument("--steps", type=int, default=2, help="timed steps a row after one warm-up (0: counts only)")
    p.add_argument("--counts-only", default="", help="families whose rows are counts only (e.g. too slow on a CPU)")
    p.add_argument("--cache-dir", default=str(ROOT / ".cache"))
    p.add_argument("--docs", default=str(ROOT / "docs" / "bench" / "vlm.md"))
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        print(json.dumps(row(spec["family"], spec["policy"], Path(spec["folder"]), spec["steps"])))
        return 0
    command = f"python -m vlm.realsize_hf {' '.join(argv if argv is not None else sys.argv[1:])}".strip()
    started, rows = machine(), []
    only_counts = {f for f in args.counts_only.split(",") if f}
    for family in [f for f in args.families.split(",") if f]:
        folder = Path(args.cache_dir) if family in only_counts else ensure(family, Path(args.cache_dir))
        for policy in [q for q in args.policies.split(",") if q]:
            spec = {"family": family, "policy": policy, "folder": str(folder),
                    "steps": 0 if family in only_counts else args.steps}
            r = subprocess.run([sys.executable, "-m", "vlm.realsize_hf", "--worker", json.dumps(spec)], cwd=ROOT,
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise SystemExit(f"error: {family} {policy}: the worker failed (exit {r.returncode}): "
                                 f"{(r.stderr.strip().splitlines() or ['?'])[-1]}")
            rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
            write_section(args.docs, BEGIN, END, table(rows, command, started))
    print("\n".join(table(rows, command, started)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
