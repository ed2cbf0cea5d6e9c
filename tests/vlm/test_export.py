"""``python -m vlm.export``: a trained composed captioner written as a plain transformers VLM.

The round trip is the contract: the folder loaded with ``AutoModelForImageTextToText`` + ``AutoProcessor`` alone
gives the captioner's greedy tokens on the same images and prompt -- for the embedded default (tiny ViT, pixel
shuffle, LayerNorm-MLP projector: InternVL-hf layout, LoRA merged), for a pixel-shuffle composition of the
InternVL-hf vision and Qwen2 replicas with InternVL tiling, and for a linear projector (LLaVA layout)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from common.errors import ConfigError
from tests.conftest import run_cli
from tests.vlm import replicas
from tests.vlm.conftest import TINY
from vlm.captioner import Captioner, save_captioner
from vlm.exporting import roundtrip
from vlm.exporting.layout import NoStandardEquivalent, plan
from vlm.exporting.source import resolve
from vlm.exporting.writer import check_out, export


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, vlm_cache) -> Path:
    """A finished two-step LoRA run of the embedded default (run dir: checkpoints/, captioner/, .hydra/)."""
    from common import run
    from common.compose import compose_run, conf_dir
    from vlm.build import build
    from vlm.schemas import SCHEMAS

    root = tmp_path_factory.mktemp("export_run")
    cfg = compose_run(conf_dir("vlm"), [
        "logger=none", f"paths.log_dir={root / 'logs'}", f"paths.cache_dir={vlm_cache}", *TINY, "+exp=lora",
        "+trainer.limit_train_batches=2", "eval.max_new_tokens=2", "callbacks.progress_bar=null",
        "+trainer.enable_progress_bar=false"], root / "run")
    run.train(cfg, build=build, schemas=SCHEMAS)
    return root / "run"


def _images(vlm_cache: Path, n: int) -> list[str]:
    return [str(p) for p in sorted(next(vlm_cache.glob("vlm/synth-*")).glob("test/*.png"))[:n]]


def _captioner(built, *overrides: str) -> Captioner:
    _, module, _ = built(*overrides)
    return Captioner(module.vlm, module.export_info, device="cpu")


def _round_trip(cap: Captioner, out: Path, images: list[str], backend: str | None = None, n_new: int = 8):
    ref = roundtrip.reference(cap, images, max_new_tokens=n_new)
    layout = export(cap, out)
    got = roundtrip.exported(out, images, cap.default_prompt, max_new_tokens=n_new, backend=backend)
    return layout, ref, got


def _same_image_features(cap: Captioner, out: Path, image: str, backend: str | None = None) -> torch.Tensor:
    """The exported model's image features (its processor's pixels through its tower and projector) equal the
    captioner's; returns the processor's pixel values: the captioner's normalised tiles (bit for bit with the PIL
    backend; AutoProcessor's default torchvision backend rescales a little differently, within 1e-6)."""
    model, proc = roundtrip.load(out, backend=backend)
    px = proc(images=[Image.open(image).convert("RGB")], text=["<image>"], return_tensors="pt")["pixel_values"]
    tiles = torch.from_numpy(cap._tiles([image])[0]).float().div(255.0)
    mine = (tiles - cap.vlm.vision.mean) / cap.vlm.vision.std
    if backend == "pil":
        assert torch.equal(px, mine)
    torch.testing.assert_close(px, mine, rtol=0, atol=1e-6)
    with torch.no_grad():
        theirs = model.model.get_image_features(pixel_values=px).pooler_output
        mine = cap.vlm.image_embeds(tiles)
    theirs = torch.stack(list(theirs)) if isinstance(theirs, list | tuple) else theirs
    assert theirs.shape == mine.shape
    torch.testing.assert_close(theirs, mine, rtol=0, atol=1e-6)
    return px


def test_embedded_default_with_lora_round_trips_token_for_token(lora_run, vlm_cache, tmp_path):
    from vlm.eval import checkpoints

    cap, inputs = resolve(str(lora_run), checkpoints)
    assert inputs[0].parent.name == "checkpoints"
    lora_b = [p for n, p in cap.vlm.llm.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # the adapters trained: the merge changes weights
    again, _ = resolve(str(inputs[0]), checkpoints)  # the .ckpt file itself: the same tensors
    assert all(torch.equal(a, b) for a, b in zip(lora_b, [p for n, p in again.vlm.llm.named_parameters()
                                                          if "lora_B" in n], strict=True))
    # two training steps still end most captions at once: ask both sides for at least 6 tokens (the
    # generation config travels with the export) so the comparison covers real sequences
    cap.vlm.llm.generation_config.min_new_tokens = 6
    images = _images(vlm_cache, 12)
    layout, ref, got = _round_trip(cap, tmp_path / "out", images)
    assert layout.cls_name == "InternVLForConditionalGeneration" and layout.shuffle == 2 and layout.has_cls
    assert all(len(r) >= 6 for r in ref) and got == ref
    _same_image_features(cap, tmp_path / "out", images[0])
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["downsample_ratio"] == 0.5 and config["vision_config"]["model_type"] == "internvl_vision"
    assert config["image_token_id"] == cap.vlm.image_token_id
    assert not list((tmp_path / "out").glob("adapter_*"))  # LoRA merged, no peft files
    from safetensors.torch import load_file

    key = "layers.0.self_attn.q_proj.weight"
    base = load_file(str(lora_run / "captioner" / "base_llm" / "model.safetensors"))[f"model.{key}"]
    merged = load_file(str(tmp_path / "out" / "model.safetensors"))[f"language_model.model.{key}"]
    assert merged.shape == base.shape and not torch.equal(merged, base)  # the adapters are in the weights
    # the prompt the processor renders is the captioner's, token for token
    from transformers import AutoProcessor

    from vlm.chat import prompt_ids, user_message

    proc = AutoProcessor.from_pretrained(tmp_path / "out")
    text = proc.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text",
                                    "text": cap.default_prompt}]}], add_generation_prompt=True, tokenize=False)
    ids = proc(images=[Image.open(images[0])], text=[text])["input_ids"][0]
    mine = prompt_ids(cap.vlm.tokenizer, [user_message(cap.default_prompt)], layout.num_image_tokens)
    assert list(ids) == mine


def test_pixel_shuffle_replicas_with_tiling_round_trip(built, vlm_cache, tmp_path):
    """InternVL-hf vision + Qwen2 replicas (28 px tiles, pixel shuffle 2), InternVL tiling up to 4 tiles."""
    vision = replicas.internvl_hf_vision(tmp_path / "vision")
    llm = replicas.qwen2_llm(tmp_path / "qwen2")
    model = [o for o in TINY if not o.startswith("model.vision.")]
    cap = _captioner(built, *model, f"model.vision.name_or_path={vision}", f"model.llm.name_or_path={llm}",
                     "data.tiles.max_num=4")
    images = _images(vlm_cache, 6)
    layout, ref, got = _round_trip(cap, tmp_path / "out", images, backend="pil")
    assert layout.kind == "internvl" and layout.num_image_tokens == 1
    assert all(ref) and got == ref
    # a random LLM says the same thing whatever the image: the image features are compared themselves.
    # The tiles: 2x2 + thumbnail, the same pixels as the captioner's (PIL backend: exact)
    px = _same_image_features(cap, tmp_path / "out", images[0], backend="pil")
    assert px.shape == (5, 3, 28, 28)


def test_an_untied_lm_head_and_large_lora_adapters_travel(built, vlm_cache, tmp_path):
    """A real LLM may not tie its head to its embeddings (Qwen2.5-7B): the head is written and the config says so;
    adapters far from zero: the tokens agree only if the merge carried them."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from vlm.models.llm import train_tokenizer
    from vlm.synth import caption_corpus

    tok = train_tokenizer(caption_corpus(), 400)
    torch.manual_seed(1)
    Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=False,
                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)).save_pretrained(tmp_path / "llm")
    tok.save_pretrained(tmp_path / "llm")
    vision = replicas.internvl_hf_vision(tmp_path / "vision")
    model = [o for o in TINY if not o.startswith("model.vision.")]
    cap = _captioner(built, *model, f"model.vision.name_or_path={vision}", f"model.llm.name_or_path={tmp_path / 'llm'}",
                     "+exp=lora")
    torch.manual_seed(2)
    for name, p in cap.vlm.llm.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)
    images = _images(vlm_cache, 4)
    _, ref, got = _round_trip(cap, tmp_path / "out", images, backend="pil")
    assert got == ref and all(len(r) >= 4 for r in ref)
    from safetensors import safe_open

    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["tie_word_embeddings"] is False and config["text_config"]["tie_word_embeddings"] is False
    with safe_open(str(tmp_path / "out" / "model.safetensors"), "pt") as f:
        assert "language_model.lm_head.weight" in set(f.keys())


def test_linear_projector_without_pixel_shuffle_exports_as_llava(built, vlm_cache, tmp_path):
    cap = _captioner(built, "model.projector.type=linear", "model.vision.pixel_shuffle=1")
    cap.vlm.llm.generation_config.min_new_tokens = 4
    images = _images(vlm_cache, 6)
    layout, ref, got = _round_trip(cap, tmp_path / "out", images)
    assert layout.cls_name == "LlavaForConditionalGeneration" and layout.num_image_tokens == 64
    assert all(len(r) >= 4 for r in ref) and got == ref
    _same_image_features(cap, tmp_path / "out", images[0])
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["vision_config"]["model_type"] == "vit" and config["vision_feature_select_strategy"] == "default"
    assert config["projector_hidden_act"] == "linear"


@pytest.mark.parametrize("overrides, message", [
    (["model.projector.type=mlp2x_gelu_vocab"], "model.projector.type=mlp2x_gelu_vocab: a projector into the LLM's vocabulary"),
    (["model.projector.type=linear"], "model.projector.type=linear with model.vision.pixel_shuffle=2: LLaVA has no pixel shuffle"),
    (["model.projector.type=linear", "model.vision.pixel_shuffle=1", "data.tiles.max_num=4"],
     "data.tiles.max_num=4: LLaVA's processor does not tile"),
])
def test_what_has_no_standard_equivalent_is_named(built, overrides, message):
    with pytest.raises(NoStandardEquivalent) as e:
        plan(_captioner(built, *overrides))
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_a_cropping_captioner_is_named(built):
    cap = _captioner(built)
    plan(cap)  # the embedded default exports
    cap.info["crop"] = True  # what data.crop=true records in captioner.json
    with pytest.raises(NoStandardEquivalent, match="^data.crop=true: the captioner crops each image"):
        plan(cap)


def test_a_tower_internvl_hf_cannot_host_is_named(built, tmp_path):
    siglip = replicas.siglip_vision(tmp_path / "siglip")
    model = [o for o in TINY if not o.startswith("model.vision.")]
    cap = _captioner(built, *model, f"model.vision.name_or_path={siglip}")
    with pytest.raises(ConfigError, match="^model.vision: InternVL-hf builds its tower as InternVLVisionModel; "
                                          "SiglipVisionModel has no exact equivalent"):
        export(cap, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_out_refuses_an_input_and_a_non_empty_dir(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    ckpt = run / "checkpoints" / "last.ckpt"
    ckpt.write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"^out: .*/run is \(or holds\) the input ckpt"):
        check_out(run, {"ckpt": run}, overwrite=True)
    with pytest.raises(ConfigError, match=r"holds\) the input ckpt="):
        check_out(tmp_path, {"ckpt": ckpt}, overwrite=True)
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="^out: .*/full is not empty; .* or overwrite=true"):
        check_out(full, {"ckpt": ckpt}, overwrite=False)
    assert check_out(full, {"ckpt": ckpt}, overwrite=True) == full.absolute()
    assert check_out(tmp_path / "new", {"ckpt": ckpt}, overwrite=False) == (tmp_path / "new").absolute()


def test_hf_vlm_checkpoints_are_dispatched_to_their_own_export(tmp_path):
    from omegaconf import OmegaConf

    from vlm.export import run

    cap = tmp_path / "cap"
    cap.mkdir()
    (cap / "captioner.json").write_text(json.dumps({"kind": "hf_vlm", "model": {"kind": "hf_vlm", "name_or_path": "/m"}}))
    # dispatched to the hf_vlm captioner, which loads its base VLM (here a path that is not one)
    with pytest.raises(ConfigError, match="^model.name_or_path: no model dir at /m$"):
        run(OmegaConf.create({"ckpt": str(cap), "out": str(tmp_path / "o"), "overwrite": False, "check_jsonl": None,
                              "dtype": "fp32"}))
    with pytest.raises(ConfigError, match="^dtype: must be one of fp32, bf16, got 'fp16'$"):
        run(OmegaConf.create({"ckpt": str(cap), "out": str(tmp_path / "o"), "overwrite": False, "check_jsonl": None,
                              "dtype": "fp16"}))


def test_cli_exports_a_run_dir_and_checks_the_round_trip(lora_run, vlm_cache, tmp_path):
    test_jsonl = next(vlm_cache.glob("vlm/synth-*/test.jsonl"))
    out = tmp_path / "exported"
    r = run_cli("-m", "vlm.export", f"ckpt={lora_run}", f"out={out}", f"check_jsonl={test_jsonl}", "check_limit=8",
                "max_new_tokens=6", f"hydra.run.dir={tmp_path / 'h'}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "export round trip: 8/8 images same greedy tokens" in r.stdout  # the plumbing; the substance: above
    assert json.loads((out / "export.json").read_text())["class"] == "InternVLForConditionalGeneration"
    # the run's own captioner/ export (what the checkpoint is read over) is an input, overwrite or not: one error
    # line, exit 2 (a non-empty out without overwrite: test_out_refuses_an_input_and_a_non_empty_dir)
    r = run_cli("-m", "vlm.export", f"ckpt={lora_run}", f"out={lora_run / 'captioner'}", "overwrite=true",
                f"hydra.run.dir={tmp_path / 'h3'}")
    errors = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert r.returncode == 2 and len(errors) == 1 and "is (or holds) the input ckpt (read from" in errors[0], r.stderr[-2000:]
    assert (lora_run / "captioner" / "captioner.json").is_file()


def test_cli_names_what_has_no_standard_equivalent(built, tmp_path):
    _, module, _ = built("model.projector.type=mlp2x_gelu_vocab")
    save_captioner(module.vlm, tmp_path / "cap", module.export_info)
    r = run_cli("-m", "vlm.export", f"ckpt={tmp_path / 'cap'}", f"out={tmp_path / 'out'}",
                f"hydra.run.dir={tmp_path / 'h'}")
    assert r.returncode == 2
    errors = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: model.projector.type=mlp2x_gelu_vocab: "), r.stderr[-2000:]
    assert "Traceback" not in r.stderr and not (tmp_path / "out").exists()
