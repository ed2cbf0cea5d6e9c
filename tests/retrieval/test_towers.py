"""Towers by name with their own preprocessing (open_clip local-dir, timm), the open_clip text tower in the image
tower's space, and zero-shot ``retrieval.eval`` from config alone: tiny random replicas, no network."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from common.errors import ConfigError
from retrieval.models.fusion import MatchModel
from retrieval.models.image import ImageTower
from tests.conftest import run_cli
from tests.reliability.harness import call

SIGLIP = (0.5, 0.5, 0.5)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)


def tiny_open_clip_dir(folder, preprocess: dict | None = None):
    """A SigLIP-like open_clip folder: ``open_clip_config.json`` (model_cfg + preprocess_cfg 0.5/0.5) and random
    weights in ``open_clip_model.safetensors``, what ``local-dir:`` loads."""
    import open_clip
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    model_cfg = {"embed_dim": 32,
                 "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
                 "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    pp = {"mean": list(SIGLIP), "std": list(SIGLIP), "interpolation": "bilinear", "resize_mode": "squash"}
    cfg = {"model_cfg": model_cfg, "preprocess_cfg": pp if preprocess is None else preprocess}
    (folder / "open_clip_config.json").write_text(json.dumps(cfg), encoding="utf-8")
    torch.manual_seed(0)
    clip = open_clip.create_model(f"local-dir:{folder}")
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    return folder, clip


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return tiny_open_clip_dir(tmp_path_factory.mktemp("towers") / "tiny-siglip")


def test_local_dir_gets_its_own_preprocessing_and_weights(clip_dir):
    folder, clip = clip_dir
    tower = ImageTower(arch=f"local-dir:{folder}")
    assert (tower.mean, tower.std) == (SIGLIP, SIGLIP)  # not OpenAI's: the folder's preprocess_cfg
    assert (tower.image_size, tower.interpolation, tower.resize_mode) == (32, "bilinear", "squash")
    assert torch.equal(tower.visual.conv1.weight, clip.visual.conv1.weight)  # the folder's weights, loaded
    out = tower(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 32) and torch.allclose(out.norm(dim=-1), torch.ones(2), atol=1e-5)
    _, eval_tf = tower.transforms()
    norm = eval_tf.transforms[-1]
    assert tuple(norm.mean) == SIGLIP and tuple(norm.std) == SIGLIP


def test_config_keys_override_the_models_own_preprocessing(clip_dir):
    folder, _ = clip_dir
    tower = ImageTower(arch=f"local-dir:{folder}", mean=[0.1, 0.2, 0.3], std=[0.3, 0.2, 0.1], interpolation="bicubic")
    assert tower.mean == (0.1, 0.2, 0.3) and tower.std == (0.3, 0.2, 0.1) and tower.interpolation == "bicubic"
    with pytest.raises(ConfigError, match=r"^model\.image\.mean: expected 3 values"):
        ImageTower(arch=f"local-dir:{folder}", mean=[0.5])
    with pytest.raises(ConfigError, match=r"^model\.image\.interpolation: expected bicubic\|bilinear or null"):
        ImageTower(arch=f"local-dir:{folder}", interpolation="lanczos")


def test_local_dir_without_preprocess_cfg_warns_of_the_openai_fallback(tmp_path, caplog):
    folder, _ = tiny_open_clip_dir(tmp_path / "bare", preprocess={})
    tower = ImageTower(arch=f"local-dir:{folder}")
    assert tower.mean == pytest.approx(OPENAI_MEAN)
    assert any("gives no mean/std" in r.getMessage() for r in caplog.records)


def test_a_builtin_name_with_a_weights_file_gets_its_published_tags_preprocessing():
    # ViT-B-16-SigLIP model.image.pretrained=/models/siglip.bin: the name's tags (webli) say 0.5/0.5, not OpenAI's
    from retrieval.models.image import _tag_preprocess

    assert _tag_preprocess("ViT-B-16-SigLIP") == {"mean": SIGLIP, "std": SIGLIP, "interpolation": "bicubic",
                                                  "resize_mode": "squash"}
    assert _tag_preprocess("ViT-B-32")["mean"] == pytest.approx(OPENAI_MEAN)


@pytest.mark.parametrize("name,mean,std,size,dim", [
    ("resnet18", IMAGENET_MEAN, IMAGENET_STD, 224, 512),  # timm's pretrained_cfg, even without weights
    ("test_vit", SIGLIP, SIGLIP, 160, 64),
])
def test_timm_tower_takes_its_pretrained_cfg(name, mean, std, size, dim):
    tower = ImageTower(arch=f"timm:{name}")
    assert (tower.mean, tower.std, tower.image_size, tower.dim) == (mean, std, size, dim)
    out = tower(torch.randn(2, 3, size, size))
    assert out.shape == (2, dim) and torch.allclose(out.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_timm_tower_loads_local_weights(tmp_path):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(1)
    src = timm.create_model("test_resnet", pretrained=False)  # with its classifier: the tower drops it
    save_file(src.state_dict(), str(tmp_path / "w.safetensors"))
    tower = ImageTower(arch="timm:test_resnet", pretrained=str(tmp_path / "w.safetensors"))
    assert torch.equal(tower.visual.conv1[0].weight, src.conv1[0].weight)
    assert tower(torch.randn(1, 3, 64, 64)).shape == (1, tower.dim)


@pytest.mark.parametrize("arch,expected", [
    ("no-such-arch", r"^model\.image\.arch: unknown open_clip architecture 'no-such-arch'"),
    ("local-dir:/no/such/folder", r"^model\.image\.arch: no such folder /no/such/folder"),
    ("hf-hub:nobody/no-such-model", r"^model\.image\.arch: hf-hub:nobody/no-such-model is not in the local Hugging Face cache"),
    ("timm:no_such_net", r"^model\.image\.arch: unknown timm model 'no_such_net'"),
], ids=["unknown", "missing_dir", "hf_offline", "timm_unknown"])
def test_bad_names_are_one_line_config_errors(arch, expected, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match=expected) as e:
        ImageTower(arch=arch)
    assert "\n" not in str(e.value)


def test_open_clip_text_tower_shares_the_image_space(clip_dir):
    folder, clip = clip_dir
    net = MatchModel(text={"arch": "open_clip"}, image={"arch": f"local-dir:{folder}"}).eval()
    texts = ["red running shoe", "blue power bank 10000mAh"]
    with torch.no_grad():
        t = net.text(texts)
        i = net.image(torch.randn(3, 3, 32, 32))
        ref = torch.nn.functional.normalize(clip.encode_text(net.text.tokenizer(texts)), dim=-1)
    assert t.shape == (2, 32) and i.shape == (3, 32)  # one space: text rows search image rows
    assert torch.allclose(t, ref, atol=1e-5)  # the folder's own text tower and tokenizer
    assert (t @ i.T).shape == (2, 3)
    with pytest.raises(ConfigError, match=r"^model\.text\.arch=open_clip: timm:test_vit has no text tower"):
        MatchModel(text="open_clip", image={"arch": "timm:test_vit"})
    with pytest.raises(ConfigError, match=r"^model\.image\.archx: unknown key"):
        MatchModel(image={"archx": "x"})


# ---------------------------------------------------------------- zero-shot retrieval.eval, the command line
def _images(folder, n: int, seed: int = 0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(n):
        p = folder / f"im{k}.png"
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


def _deepmatcher_with_images(tmp_path):
    d = tmp_path / "dm"
    _images(d / "photos", 6)
    (d / "tableA.csv").write_text("id,name,image\n0,Sony Turntable PSLX350H,photos/im0.png\n"
                                  "1,Bose Speaker AM53,photos/im1.png\n2,LG Microwave,photos/im2.png\n")
    (d / "tableB.csv").write_text("id,name,image\n10,Sony PS-LX350H turntable,photos/im3.png\n"
                                  "11,Bose AM5 speaker system,photos/im4.png\n12,Panasonic fridge,photos/im5.png\n")
    (d / "matches.csv").write_text("tableA_id,tableB_id\n0,10\n1,11\n")
    return d


def _query_gallery(tmp_path, query_images: bool = True):
    imgs = _images(tmp_path / "qg", 6, seed=1)
    titles = ["red running shoe", "blue power bank", "green kettle"]
    q = [{"id": k, "title": t, "group": f"g{k}", **({"image": str(imgs[k])} if query_images else {})}
         for k, t in enumerate(titles)]
    g = [{"id": 10 + k, "title": t + " new", "group": f"g{k}", "image": str(imgs[3 + k])} for k, t in enumerate(titles)]
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(r) + "\n" for r in q))
    (tmp_path / "g.jsonl").write_text("".join(json.dumps(r) + "\n" for r in g))
    return ["data=query_gallery", f"data.path={tmp_path / 'q.jsonl'}", f"data.gallery={tmp_path / 'g.jsonl'}"]


def _eval_args(tmp_path, *args):
    out = tmp_path / "eval"
    return [*args, f"hydra.run.dir={out}", f"paths.cache_dir={tmp_path / 'cache'}", "logger=none"], out


def _eval(tmp_path, *args):
    """``python -m retrieval.eval`` in this process (a fresh interpreter is ~6-14 s of imports per case); the
    real command line's exit code is proven once, in ``test_eval_without_checkpoint_or_arch_says_what_to_give``."""
    argv, out = _eval_args(tmp_path, *args)
    return call("retrieval.eval", *argv), out


def _check_metrics(r, out, n_gallery: int = 3):
    assert r.code == 0, r.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    for key in ("eval/recall_at_1", "eval/mrr", "eval/f1", "eval/f1_oracle"):
        assert 0.0 <= m[key] <= 1.0, key
    assert m["eval/recall_at_10"] == 1.0  # n_gallery < 10: every match is in the top 10
    assert (out / "predictions.csv").read_text().startswith("posting_id,matches\n")
    return m


@pytest.mark.parametrize("arch", ["local-dir", "timm:test_vit"])
def test_zero_shot_eval_on_a_deepmatcher_folder_with_photos(tmp_path, clip_dir, arch):
    arch = f"local-dir:{clip_dir[0]}" if arch == "local-dir" else arch
    r, out = _eval(tmp_path, f"model.image.arch={arch}", "model.image.image_size=32",
                   f"data.path={_deepmatcher_with_images(tmp_path)}")
    m = _check_metrics(r, out)
    assert "eval/pair_f1" not in m or 0.0 <= m["eval/pair_f1"] <= 1.0


@pytest.mark.parametrize("arch", ["local-dir", "timm:test_resnet"])
def test_zero_shot_eval_on_a_query_gallery_folder(tmp_path, clip_dir, arch):
    arch = f"local-dir:{clip_dir[0]}" if arch == "local-dir" else arch
    r, out = _eval(tmp_path, f"model.image.arch={arch}", *_query_gallery(tmp_path))
    _check_metrics(r, out)


def test_text_queries_search_the_image_gallery_of_one_open_clip_model(tmp_path, clip_dir):
    # the queries carry no photo: text tower on the query side, image tower on the gallery, one space
    r, out = _eval(tmp_path, f"model.image.arch=local-dir:{clip_dir[0]}", "model.text=open_clip",
                   "query_tower=text", "gallery_tower=image", *_query_gallery(tmp_path, query_images=False))
    _check_metrics(r, out)
    # the gallery side went through the image tower (the warning is a log line: Hydra's console handler is stdout)
    assert "the data has no images" not in r.stdout + r.stderr


def test_query_and_gallery_towers_must_share_a_space(clip_dir):
    from retrieval.data import Catalog
    from retrieval.eval import embed_sides
    from retrieval.module import RetrievalModule

    m = RetrievalModule({"text": "open_clip", "image": {"arch": f"local-dir:{clip_dir[0]}"}})
    sided = Catalog(["q:0", "g:0"], ["a", "b"], ["x", "x"], [None, None], ["a", "b"])
    with pytest.raises(ConfigError, match=r"^query_tower / gallery_tower: text embeds in 32 dimensions, fused in 64"):
        embed_sides(m, sided, [0, 1], ("text", None))
    unsided = Catalog(["p0", "p1"], ["a", "b"], ["x", "x"], [None, None])
    with pytest.raises(ConfigError, match=r"^query_tower / gallery_tower: differ only on data with query and gallery"):
        embed_sides(m, unsided, [0, 1], ("text", "image"))


def test_one_image_index_serves_text_and_image_queries(tmp_path, clip_dir):
    from retrieval.data import read_query_gallery
    from retrieval.embed import embed_catalog
    from retrieval.knn import build_index, search
    from retrieval.module import RetrievalModule

    torch.manual_seed(0)
    module = RetrievalModule({"text": "open_clip", "image": {"arch": f"local-dir:{clip_dir[0]}"}}).eval()
    _query_gallery(tmp_path)
    cat, split = read_query_gallery(tmp_path / "q.jsonl", tmp_path / "g.jsonl")
    gallery = embed_catalog(module, cat, split.gallery, tower="image")
    g = np.stack([gallery[int(i)] for i in split.gallery])
    index = build_index(g)
    assert g.shape == (3, 32)
    for tower in ("text", "image"):
        e = embed_catalog(module, cat, split.queries, tower=tower)
        q = np.stack([e[int(i)] for i in split.queries])
        scores, ids = search(index, q, 3)
        assert q.shape == (3, 32) and ids.shape == (3, 3) and np.allclose(scores[:, 0], (q @ g.T).max(1), atol=1e-5)


@pytest.mark.parametrize("arch,expected", [
    ("no-such-arch", "error: model.image.arch: unknown open_clip architecture 'no-such-arch'"),
    ("local-dir:/no/such/folder", "error: model.image.arch: no such folder /no/such/folder"),
    ("hf-hub:nobody/no-such-model", "error: model.image.arch: hf-hub:nobody/no-such-model is not in the local"),
], ids=["unknown", "missing_dir", "hf_offline"])
def test_eval_bad_arch_is_one_line_exit_2(tmp_path, arch, expected):
    r, _ = _eval(tmp_path, f"model.image.arch={arch}", *_query_gallery(tmp_path))
    assert r.code == 2, r.stderr[-2000:]
    err = r.error_lines
    assert len(err) == 1 and err[0].startswith(expected), r.stderr[-2000:]
    assert "Traceback" not in r.stderr


def test_eval_without_checkpoint_or_arch_says_what_to_give(tmp_path):
    # the command line itself, in a fresh interpreter: exit 2 and the one line, no traceback
    argv, _ = _eval_args(tmp_path, *_query_gallery(tmp_path))
    r = run_cli("-m", "retrieval.eval", *argv, env={"HF_HUB_OFFLINE": "1"}, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    err = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and err[0].startswith("error: model.image.arch: required without a checkpoint"), r.stderr
    assert "Traceback" not in r.stderr


def test_augment_false_trains_on_the_eval_transform():
    from torchvision.transforms import RandomResizedCrop

    def crops(tf):
        return [t for t in tf.transforms if isinstance(t, RandomResizedCrop)]

    train, test = ImageTower("retrieval-tiny-vit").transforms()
    assert crops(train) and not crops(test)
    train, test = ImageTower("retrieval-tiny-vit", augment=False).transforms()
    assert train is test and not crops(train)


def test_text_dropout_replaces_the_encoders_own():
    from retrieval.models.text import TextTower

    assert TextTower(num_layers=1).encoder.config.hidden_dropout_prob == 0.1
    cfg = TextTower(num_layers=1, dropout=0.0).encoder.config
    assert (cfg.hidden_dropout_prob, cfg.attention_probs_dropout_prob) == (0.0, 0.0)
    with pytest.raises(ConfigError, match=r"model.text.dropout: expected a probability in \[0, 1\), got 1.5"):
        TextTower(num_layers=1, dropout=1.5)


@pytest.fixture(scope="module")
def hf_siglip_dir(tmp_path_factory):
    """A tiny SigLIP vision encoder saved as transformers saves one, with SigLIP's processor constants."""
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    out = tmp_path_factory.mktemp("hf_siglip")
    torch.manual_seed(0)
    SiglipVisionModel(SiglipVisionConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                         intermediate_size=64, image_size=32, patch_size=8)).save_pretrained(out)
    SiglipImageProcessor(size={"height": 32, "width": 32}, resample=2).save_pretrained(out)
    return out


def test_transformers_encoder_by_path_gets_its_processors_constants(hf_siglip_dir):
    tower = ImageTower(arch=f"hf:{hf_siglip_dir}")
    assert (tower.mean, tower.std, tower.image_size, tower.interpolation) == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 32, "bilinear")
    x = torch.rand(2, 3, 32, 32)
    e = tower(x)
    assert e.shape == (2, 32) and torch.allclose(e.norm(dim=-1), torch.ones(2))
    # the vision model's pooled output, L2-normalised: the tower adds nothing of its own
    pooled = tower.visual.model(pixel_values=x).pooler_output
    assert torch.allclose(e, torch.nn.functional.normalize(pooled, dim=-1), atol=1e-6)
    assert ImageTower(arch=f"hf:{hf_siglip_dir}", mean=[0.1, 0.2, 0.3]).mean == (0.1, 0.2, 0.3)


def test_transformers_arch_without_a_model_folder_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"hf:.* is not a transformers model folder \(no config.json\)"):
        ImageTower(arch=f"hf:{tmp_path}")
