"""``model=hf_vlm``: whole pre-trained VLMs by path (tiny random LLaVA-1.5, LLaVA-NeXT, Qwen2-VL and InternVL-hf
replicas with their own processor classes and chat templates, saved with save_pretrained): train -> eval ->
generate on the CLI (LLaVA-NeXT) and in process (the others), frozen parts bit-identical, LoRA moving only its
adapters (on the language model only), a template or max_length that supervises nothing failing loudly, and
the plain transformers export giving the same greedy tokens."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tests.conftest import run_cli
from tests.vlm import replicas
from tests.vlm.conftest import synth_dir

DATA = [
    "data.synthetic.brands=3", "data.synthetic.train_logo_per_brand=8", "data.synthetic.train_none=8",
    "data.synthetic.train_none_brand_per_brand=2", "data.synthetic.eval_logo_per_brand=2", "data.synthetic.eval_none=2",
    "data.synthetic.eval_none_brand_per_brand=1", "data.train_eval_size=4", "data.batch_size=8",
    "data.eval_batch_size=16",
]
FAST = [*DATA, "trainer.max_epochs=1", "eval.max_new_tokens=6",
        "scheduler.warmup_steps=0", "lr_groups.llm=0.01", "lr_groups.projector=0.01", "lr_groups.vision=0.01",
        "callbacks.progress_bar=null", "+trainer.enable_progress_bar=false"]
PROMPT = "What product is this?"  # one of the synthetic records' prompts


@pytest.fixture(scope="session")
def whole_vlms(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("whole_vlms")
    return {name: make(root / name) for name, make in replicas.VLMS.items()}


@pytest.fixture
def hf_cfg(vlm_cfg, whole_vlms):
    def make(family: str, *overrides: str, path: Path | None = None):
        return vlm_cfg("model=hf_vlm", f"model.name_or_path={path or whole_vlms[family]}", *overrides, tiny=False)

    return make


def _build(cfg):
    from common.config import validate
    from vlm.build import build
    from vlm.schemas import schemas_for

    return build(validate(cfg, schemas_for(cfg)))


def _snapshot(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.vlm.named_parameters()}


def _test_records(cfg) -> dict[str, dict]:
    path = synth_dir(cfg) / "test.jsonl"
    return {r["id"]: {**r, "image": str(path.parent / r["image"])} for r in map(json.loads, path.read_text().splitlines())}


CASES = {  # family -> (overlay, what must have trained, what must be bit-identical)
    "llava": (["+exp=hf_vlm_lora"], {"projector", "lora"}, {"vision", "llm"}),
    "qwen2_vl": (["+exp=hf_vlm_freeze"], {"vision", "projector"}, {"llm"}),
    "internvl": (["+exp=hf_vlm_lora", "model.lora.target_modules=[q_proj,k_proj]"], {"projector", "lora"}, {"vision", "llm"}),
}


@pytest.mark.parametrize("family", list(CASES))
def test_train_test_caption_and_export_in_process(hf_cfg, family, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from common import run
    from vlm.captioner import Captioner
    from vlm.schemas import schemas_for

    overlay, moved, kept = CASES[family]
    cfg = hf_cfg(family, *overlay, *FAST, "logger=none", "eval.grid_samples=0")  # MLflow and the grid: the CLI test
    module, dm = _build(cfg)
    vlm = module.vlm
    before = _snapshot(module)
    lora = [n for n in before if "lora_" in n]
    if "lora" in moved:  # adapters on the language model's targets only (InternVL's vision tower has q_proj too)
        assert lora and all(vlm.group_of(n) == "llm" for n in lora)
        targets = set(cfg.model.lora.target_modules)
        assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in lora} == targets
    else:
        assert not lora
    trainable = {n for n, p in vlm.named_parameters() if p.requires_grad}
    assert trainable and all(p.dtype == torch.float32 for n, p in vlm.named_parameters() if n in trainable)

    run.train(cfg, build=lambda _: (module, dm), schemas=schemas_for(cfg))
    after = _snapshot(module)

    def part(n: str) -> str:
        return "lora" if "lora_" in n else vlm.group_of(n)

    for n, v in before.items():
        if part(n) in kept:
            assert torch.equal(v, after[n]), f"{n} ({part(n)}) moved"
    for p in moved:
        names = [n for n in before if part(n) == p and n in trainable]
        assert names and any(not torch.equal(before[n], after[n]) for n in names), f"no {p} tensor moved"
    assert not trainable & {n for n in before if part(n) in kept}

    out = Path(cfg.paths.output_dir)
    metrics = json.loads((out / "metrics.json").read_text())
    for k in cfg.report_metrics:
        assert k in metrics
    # vlm.eval's command line (in this process) on the run dir reproduces the run's own test of its checkpoint
    from tests.reliability.harness import call

    r = call("vlm.eval", f"ckpt={out}", f"paths.cache_dir={cfg.paths.cache_dir}", f"paths.log_dir={tmp_path / 'logs'}",
             "logger=none", "callbacks.progress_bar=null", "hydra.run.dir=" + str(tmp_path / "eval"))
    assert r.code == 0, r.stderr[-3000:]
    again = json.loads(next((tmp_path / "eval").glob("epoch_*/metrics.json")).read_text())
    assert again["test/loss"] == pytest.approx(metrics["test/loss"], rel=1e-5)
    assert {k: again[k] for k in cfg.report_metrics if k.startswith("test/")} == \
           {k: metrics[k] for k in cfg.report_metrics if k.startswith("test/")}
    ckpt = torch.load(next((out / "checkpoints").glob("epoch_*.ckpt")), weights_only=True)
    assert set(ckpt["state_dict"]) == {f"vlm.{n}" for n in trainable}  # only what trained

    # the run's captioner export captions the test images as the run's test did (same greedy tokens)
    cap = Captioner.load(out / "captioner", device="cpu")
    records = _test_records(cfg)
    preds = [json.loads(line) for line in (out / "predictions_test.jsonl").read_text().splitlines()]
    same = [p for p in preds if records[p["id"]].get("prompt") == PROMPT]
    assert same
    images = [records[p["id"]]["image"] for p in same]
    assert cap.caption(images, prompt=PROMPT, max_new_tokens=6) == [p["pred"] for p in same]
    from vlm.serving.backends import CaptionerBackend  # what vlm.serve answers with

    served = CaptionerBackend(str(out / "captioner"), device="cpu").caption(
        images, [PROMPT] * len(images), temperature=0.0, top_p=1.0, max_new_tokens=6, seed=0)
    assert served == [p["pred"] for p in same]
    from PIL import Image as PILImage

    img = PILImage.open(images[0]).convert("RGB")  # usage: the ids the VLM reads, image tokens expanded
    n_ids = int(cap._inputs([img], PROMPT)["input_ids"].shape[1])
    assert CaptionerBackend(str(out / "captioner"), device="cpu").prompt_tokens(img, PROMPT) == n_ids > 1

    # the plain transformers export of the checkpoint (LoRA merged): same greedy tokens with no code of this repository
    from vlm.hf_captioner import export_pretrained

    ids = cap.generate_ids(images, prompt=PROMPT, max_new_tokens=6)
    plain_dir = export_pretrained(cfg.model, next((out / "checkpoints").glob("epoch_*.ckpt")), tmp_path / "plain")
    model = AutoModelForImageTextToText.from_pretrained(plain_dir).eval()
    processor = AutoProcessor.from_pretrained(plain_dir)
    assert not any("lora" in n for n, _ in model.named_parameters())
    from PIL import Image

    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}]
    text = processor.apply_chat_template(msgs, add_generation_prompt=True)
    enc = processor(images=[Image.open(i).convert("RGB") for i in images], text=[text] * len(images), padding=True,
                    padding_side="left", return_tensors="pt")
    with torch.no_grad():
        gen = model.generate(**enc, max_new_tokens=6, do_sample=False)[:, enc["input_ids"].shape[1]:]
    eos = model.generation_config.eos_token_id
    plain = [row[: row.index(eos)] if eos in row else row for row in gen.tolist()]
    assert plain == ids


@pytest.mark.slow
def test_llava_next_through_train_eval_generate_on_the_cli(whole_vlms, tmp_path, vlm_cache, mlflow_uri):
    from mlflow import MlflowClient

    common = [f"paths.cache_dir={vlm_cache}", f"paths.log_dir={tmp_path / 'logs'}",
              f"logger.mlflow.tracking_uri={mlflow_uri}", f"logger.mlflow.artifact_location={tmp_path / 'art'}"]
    model = ["model=hf_vlm", f"model.name_or_path={whole_vlms['llava_next']}", "+exp=hf_vlm_lora", "model.lora.r=4"]
    run_dir = tmp_path / "run"
    r = run_cli("-m", "vlm.train", *common, *model, *FAST, "hydra.run.dir=" + str(run_dir))
    assert r.returncode == 0, r.stderr[-3000:]
    client = MlflowClient(tracking_uri=mlflow_uri)
    train = client.get_run((run_dir / "mlflow_run_id").read_text().strip())
    report = json.loads(train.data.tags["report_metrics"])
    assert len(report) == 6 and all(k in train.data.metrics for k in report)  # the tuning log's six recalls
    assert train.data.params["model.kind"] == "hf_vlm" and train.data.params["model.lora.r"] == "4"

    r = run_cli("-m", "vlm.eval", f"ckpt={run_dir}", *common, "hydra.run.dir=" + str(tmp_path / "eval"))
    assert r.returncode == 0, r.stderr[-3000:]
    rows = client.search_runs([train.info.experiment_id], f"tags.eval_ckpt LIKE '{run_dir}%'")
    assert [x.data.tags["epoch"] for x in rows] == ["1"]  # one row per saved checkpoint (last.ckpt repeats it)
    assert rows[0].data.tags["source_run_id"] == train.info.run_id and "test/none_recall" in rows[0].data.metrics
    # the evaluation of the checkpoint reproduces the training run's own test of it
    trained = json.loads((run_dir / "metrics.json").read_text())
    again = json.loads((tmp_path / "eval" / "epoch_000" / "metrics.json").read_text())
    assert again["test/loss"] == pytest.approx(trained["test/loss"], rel=1e-5)

    test_jsonl = synth_dir(run_dir) / "test.jsonl"
    out = tmp_path / "captions.jsonl"
    r = run_cli("-m", "vlm.generate", "--jsonl", str(test_jsonl), "--captioner", str(run_dir / "captioner"),
                "--out", str(out), "--prompt", PROMPT, "--max-new-tokens", "6")
    assert r.returncode == 0, r.stderr[-3000:]
    captions = {c["id"]: c["caption"] for c in map(json.loads, out.read_text().splitlines())}
    records = {r["id"]: r for r in map(json.loads, test_jsonl.read_text().splitlines())}
    preds = [json.loads(line) for line in (run_dir / "predictions_test.jsonl").read_text().splitlines()]
    same = [p for p in preds if records[p["id"]].get("prompt") == PROMPT]
    assert same and all(captions[p["id"]] == p["pred"] for p in same)

    # vlm.export: the run as a plain LlavaNextForConditionalGeneration dir (LoRA merged), round trip checked
    out_dir = tmp_path / "export"
    r = run_cli("-m", "vlm.export", f"ckpt={run_dir}", f"out={out_dir}", f"check_jsonl={test_jsonl}", "check_limit=4",
                "max_new_tokens=6", *common[:2], "hydra.run.dir=" + str(tmp_path / "export_run"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "wrote LlavaNextForConditionalGeneration" in r.stdout and "4/4 images same greedy tokens" in r.stdout
    saved = json.loads((out_dir / "config.json").read_text())
    assert saved["architectures"] == ["LlavaNextForConditionalGeneration"] and not list(out_dir.glob("adapter_*"))


def _with_template(src: Path, dst: Path, template: str) -> Path:
    shutil.copytree(src, dst)
    (dst / "chat_template.jinja").write_text(template)
    return dst


TEMPLATES = {  # a processor whose chat template would supervise nothing -> the one-line error it gets
    "empty_assistant_turn": (replicas.QWEN_TEMPLATE.replace("{{ c['text'] }}", "{% if message['role'] != 'assistant' %}"
                                                            "{{ c['text'] }}{% endif %}"),
                             "the chat template does not render assistant turn 1 after its generation prompt: "
                             "no token to supervise"),
    "no_assistant_turn": (replicas.QWEN_TEMPLATE.replace("{% for message in messages %}",
                                                         "{% for message in messages if message['role'] != 'assistant' %}"),
                          "chat template mismatch: the conversation up to the generation prompt of assistant turn 1 "
                          "is not a prefix of the full conversation"),
}


@pytest.mark.parametrize("case", list(TEMPLATES))
def test_a_template_that_supervises_nothing_fails_loudly(hf_cfg, whole_vlms, tmp_path, case):
    import re

    from vlm.chat import TemplateError

    template, message = TEMPLATES[case]
    path = _with_template(whole_vlms["qwen2_vl"], tmp_path / case, template)
    with pytest.raises(TemplateError, match="^record train-\\d+: " + re.escape(message)):
        _build(hf_cfg("qwen2_vl", *DATA, path=path))


def test_a_max_length_that_cuts_the_assistant_turn_fails_loudly(hf_cfg):
    from vlm.chat import TemplateError

    with pytest.raises(TemplateError, match=r"^record \S+: no supervised token: model.max_length=12 cuts it"):
        _build(hf_cfg("llava", *DATA, "model.max_length=12"))


def test_labels_are_the_assistant_tokens_only(hf_cfg):
    """Hand-checked on one InternVL batch: the supervised tokens decode to exactly the caption and its end-of-turn."""
    _, dm = _build(hf_cfg("internvl", *DATA))
    batch = next(iter(dm.train_dataloader()))
    tok = dm.tokenizer
    for i, meta in enumerate(batch["meta"]):
        supervised = batch["labels"][i][batch["labels"][i] != -100].tolist()
        assert tok.decode(supervised) == meta["caption"] + "<|im_end|>\n"
        ids = batch["inputs"]["input_ids"][i]
        start = int((batch["labels"][i] != -100).nonzero()[0])
        assert tok.decode(ids[:start]).endswith("<|im_start|>assistant\n")


def test_a_multi_turn_conversation_supervises_each_assistant_turn_only(hf_cfg):
    """A LLaVA-style record with two exchanges: both answers (and their end-of-turn) are labels, the second
    question is not."""
    from vlm.data import Record
    from vlm.hf_data import HfCaptionDataset, collate

    _, dm = _build(hf_cfg("qwen2_vl", *DATA))
    image = dm.records["train"][0].image
    msgs = [{"role": "user", "content": "<image>\nWhat product is this?"}, {"role": "assistant", "content": "A red bag."},
            {"role": "user", "content": "Which brand?"}, {"role": "assistant", "content": "Velora."}]
    ds = HfCaptionDataset([Record("two-turns", image, "Velora", "logo", msgs)], dm.processor)
    batch = collate(dm.processor, None, True)([ds[0]])
    labels = batch["labels"][0]
    supervised = labels[labels != -100].tolist()
    assert dm.tokenizer.decode(supervised) == "A red bag.<|im_end|>\nVelora.<|im_end|>\n"
    ids = batch["inputs"]["input_ids"][0]
    assert "Which brand?" in dm.tokenizer.decode(ids[labels == -100])


def test_lr_groups_per_part_and_each_familys_image_inputs(hf_cfg):
    """lr_groups.<part> for the trainable parts of a whole VLM (the overlay's LLM and projector rates); and the
    processors' own image handling reaches the model: LLaVA-NeXT's anyres patches, InternVL's tiles, Qwen2-VL's grid."""
    module, dm = _build(hf_cfg("llava_next", *DATA, "+exp=hf_vlm_lora"))
    groups = module._param_groups()
    assert {g["name"]: g["lr"] for g in groups} == {"projector": 0.0002, "projector_nd": 0.0002, "llm": 0.0005}
    grouped = [id(p) for g in groups for p in g["params"]]
    trainable = [id(p) for p in module.vlm.parameters() if p.requires_grad]
    assert sorted(grouped) == sorted(trainable)
    inputs = next(iter(dm.train_dataloader()))["inputs"]
    assert inputs["pixel_values"].shape[:2] == (8, 5) and inputs["image_sizes"].tolist()[0] == [64, 64]  # 2x2 + base
    _, dm = _build(hf_cfg("internvl", *DATA))
    assert next(iter(dm.train_dataloader()))["inputs"]["pixel_values"].shape[0] == 8 * 5  # 2x2 tiles + thumbnail each
    _, dm = _build(hf_cfg("qwen2_vl", *DATA))
    assert next(iter(dm.train_dataloader()))["inputs"]["image_grid_thw"].tolist()[0] == [1, 4, 4]


def test_hf_vlm_config_errors_name_the_key(hf_cfg, tmp_path):
    from common.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^model.lora.target_modules: no linear layer named \['qkv'\] in the language model"):
        _build(hf_cfg("llava", *DATA, "+exp=hf_vlm_lora", "model.lora.target_modules=[qkv]"))
    with pytest.raises(ConfigError, match=r"^model.train_llm: LoRA"):
        _build(hf_cfg("llava", *DATA, "+exp=hf_vlm_lora", "model.train_llm=true"))
    with pytest.raises(ConfigError, match=r"^model.name_or_path: no model dir at"):
        _build(hf_cfg("llava", *DATA, path=tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match=r"^data.tiles.max_num: model=hf_vlm tiles images with its own processor"):
        _build(hf_cfg("llava", *DATA, "data.tiles.max_num=4"))


def test_bf16_frozen_parts_with_fp32_trainables_train_on_cpu(hf_cfg, tmp_path):
    """The dtype policy: frozen parts stay as loaded (bf16), what trains is fp32, and the seams between them cast;
    the plain export is all bf16 again."""
    from safetensors import safe_open

    module, dm = _build(hf_cfg("llava_next", *DATA, "+exp=hf_vlm_lora", "model.dtype=bf16"))
    params = dict(module.vlm.named_parameters())
    assert {str(p.dtype) for p in params.values() if not p.requires_grad} == {"torch.bfloat16"}
    assert {str(p.dtype) for p in params.values() if p.requires_grad} == {"torch.float32"}
    loss = module._loss(next(iter(dm.train_dataloader())))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params.values() if p.requires_grad)
    assert all(p.grad is None for p in params.values() if not p.requires_grad)
    out = module.vlm.save_pretrained(tmp_path / "plain")
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert {str(f.get_slice(k).get_dtype()) for k in f.keys()} == {"BF16"}
