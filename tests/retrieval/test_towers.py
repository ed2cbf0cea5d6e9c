"""Towers by name with their own preprocessing (open_clip local-dir, timm), the open_clip text tower in the image
tower's space, and zero-shot ``retrieval.eval`` from config alone: tiny random replicas, no network."""

from __future__ import annotations

import json

import pytest
import torch

from common.errors import ConfigError
from retrieval.models.fusion import MatchModel
from retrieval.models.image import ImageTower

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


def test_local_dir_without_preprocess_cfg_warns_of_the_openai_fallback(tmp_path, caplog):
    folder, _ = tiny_open_clip_dir(tmp_path / "bare", preprocess={})
    tower = ImageTower(arch=f"local-dir:{folder}")
    assert tower.mean == pytest.approx(OPENAI_MEAN)
    assert any("gives no mean/std" in r.getMessage() for r in caplog.records)


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
