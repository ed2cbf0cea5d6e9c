"""Real tower families by path (tiny random replicas saved like the real checkpoints, no hub): InternVL-hf
vision, remote-code InternViT (imports einops, no post_init), SigLIP, with a Qwen2 LLM; the dtype policy;
and every way a vision load fails as one ``model.vision.name_or_path`` line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import run_cli
from tests.reliability.harness import call
from tests.vlm import replicas
from tests.vlm.conftest import synth_dir

TOWERS = {
    "internvl_hf": (replicas.internvl_hf_vision, []),
    "remote_internvit": (replicas.remote_internvit, ["model.vision.trust_remote_code=true"]),
    "siglip": (replicas.siglip_vision, []),
}


@pytest.fixture(scope="session")
def towers(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("towers")
    out = {name: make(root / name) for name, (make, _) in TOWERS.items()}
    out["qwen2"] = replicas.qwen2_llm(root / "qwen2")
    return out


def _tower_overrides(towers, name: str) -> list[str]:
    return [f"model.vision.name_or_path={towers[name]}", *TOWERS[name][1], f"model.llm.name_or_path={towers['qwen2']}"]


def test_remote_internvit_replica_fails_plain_transformers_the_way_the_real_one_does(towers):
    """The premise of the post_init fix: transformers 5 cannot load a class whose __init__ skips post_init."""
    from transformers import AutoModel

    with pytest.raises(AttributeError, match="all_tied_weights_keys"):
        AutoModel.from_pretrained(towers["remote_internvit"], trust_remote_code=True)


@pytest.mark.parametrize("name", list(TOWERS))
def test_each_tower_trains_with_its_frozen_parts_bit_identical(built, towers, name):
    import lightning as L

    cfg, module, dm = built(*_tower_overrides(towers, name), "data.tiles.max_num=4", "model.gradient_checkpointing=true")
    vlm = module.vlm
    assert vlm.vision.image_size == replicas.IMAGE
    assert vlm.vision.mean.flatten().tolist() == pytest.approx(json.loads(
        (towers[name] / "preprocessor_config.json").read_text())["image_mean"])
    frozen = {k: v.detach().clone() for k, v in vlm.named_parameters() if not v.requires_grad}
    trained = {k: v.detach().clone() for k, v in vlm.named_parameters() if v.requires_grad}
    assert any(k.startswith("llm.") for k in frozen) and not any(k.startswith("llm.") for k in trained)
    assert all(v.dtype == torch.float32 for v in trained.values())
    batch = next(iter(dm.train_dataloader()))
    assert batch["pixels"].shape[0] == sum(batch["n_tiles"]) > len(batch["n_tiles"])  # square images: 2x2 + thumbnail
    trainer = L.Trainer(max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        limit_val_batches=0, enable_model_summary=False)
    trainer.fit(module, train_dataloaders=dm.train_dataloader())
    now = dict(vlm.named_parameters())
    assert all(torch.equal(now[k], v) for k, v in frozen.items())
    assert any(not torch.equal(now[k], v) for k, v in trained.items())


def test_bf16_frozen_tower_with_fp32_projector_runs_forward_and_backward_on_cpu(built, towers):
    cfg, module, dm = built(*_tower_overrides(towers, "remote_internvit"), "model.train_vision=false")
    vlm = module.vlm
    assert vlm.vision.dtype == torch.bfloat16  # dtype=auto keeps the checkpoint's bf16 for the frozen tower
    assert all(p.dtype == torch.float32 for p in vlm.projector.parameters())
    batch = next(iter(dm.train_dataloader()))
    loss = vlm(batch["input_ids"], batch["attention_mask"], batch["labels"], batch["pixels"])
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in vlm.projector.parameters())
    assert all(p.grad is None for p in vlm.vision.parameters())


def test_vision_dtype_policy(built, towers):
    _, module, _ = built(*_tower_overrides(towers, "remote_internvit"), "model.vision.dtype=fp32", "model.train_vision=false")
    assert module.vlm.vision.dtype == torch.float32
    _, module, _ = built(*_tower_overrides(towers, "remote_internvit"))  # bf16 checkpoint, but it trains
    assert module.vlm.vision.dtype == torch.float32
    _, module, _ = built(*_tower_overrides(towers, "siglip"), "model.vision.dtype=bf16", "model.train_vision=false",
                         "model.llm.dtype=bf16")
    assert module.vlm.vision.dtype == torch.bfloat16 and module.vlm.llm.dtype == torch.bfloat16


def _broken(tmp_path: Path, how: str) -> Path:
    d = replicas.remote_internvit(tmp_path / how)
    if how == "missing_package":
        f = d / "modeling_intern_vit.py"
        f.write_text("import flash_attn_not_installed_xyz\n" + f.read_text())
    elif how == "raises_at_init":
        f = d / "modeling_intern_vit.py"
        f.write_text(f.read_text().replace("        self.config = config\n", "        raise RuntimeError('boom')\n"))
    elif how == "corrupt_weights":
        (d / "model.safetensors").write_bytes(b"not safetensors")
    elif how == "no_preprocessor":
        (d / "preprocessor_config.json").unlink()
    return d


@pytest.mark.parametrize("how", ["missing_package", "raises_at_init", "corrupt_weights", "no_preprocessor"])
def test_any_vision_load_failure_is_one_config_error(tmp_path, how):
    from omegaconf import OmegaConf

    from common.errors import ConfigError
    from vlm.models.vision import VisionTower
    from vlm.schemas import VisionSchema

    cfg = OmegaConf.structured(VisionSchema)
    cfg.name_or_path, cfg.trust_remote_code = str(_broken(tmp_path, how)), True
    with pytest.raises(ConfigError, match=r"^model\.vision\.name_or_path: ") as e:
        VisionTower(cfg)
    assert "\n" not in str(e.value)


def test_a_broken_vision_dir_is_one_error_line_on_the_cli(tmp_path):
    d = _broken(tmp_path, "raises_at_init")
    r = run_cli("-m", "vlm.train", f"model.vision.name_or_path={d}", "model.vision.trust_remote_code=true",
                "logger=none", f"paths.log_dir={tmp_path / 'logs'}")
    assert r.returncode == 2, r.stderr[-2000:]
    lines = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith("error: model.vision.name_or_path: cannot load"), r.stderr[-2000:]
    assert "Traceback" not in r.stderr


E2E = ["+exp=freeze_llm", "trainer.max_epochs=2", "trainer.check_val_every_n_epoch=1",
       "callbacks.model_checkpoint.save_top_k=-1", "callbacks.progress_bar=null", "+trainer.enable_progress_bar=false",
       "eval.max_new_tokens=6"]
CASES = {  # what each tower exercises beyond loading
    "internvl_hf": ["data.tiles.max_num=4"],
    "remote_internvit": ["model.train_vision=false"],  # bf16 frozen tower
    "siglip": ["model.gradient_checkpointing=true"],
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TOWERS))
def test_tower_through_train_eval_generate_on_the_cli(towers, name, tmp_path, vlm_cache, mlflow_uri):
    from mlflow import MlflowClient

    from tests.vlm.conftest import TINY

    common = [f"paths.cache_dir={vlm_cache}", f"paths.log_dir={tmp_path / 'logs'}",
              f"logger.mlflow.tracking_uri={mlflow_uri}", f"logger.mlflow.artifact_location={tmp_path / 'art'}"]
    model = [o for o in TINY if not o.startswith("model.vision.")] + _tower_overrides(towers, name) + CASES[name]
    # the three commands in this process (a fresh interpreter each is ~7 s of imports); the command line's own
    # exit code is test_a_broken_vision_dir_is_one_error_line_on_the_cli's
    r = call("vlm.train", *common, *model, *E2E, "hydra.run.dir=" + str(tmp_path / "run"))
    assert r.code == 0, r.stderr[-3000:]
    run_dir = tmp_path / "run"
    saved = sorted(p.name for p in (run_dir / "checkpoints").glob("epoch_*.ckpt"))
    assert saved == ["epoch_000.ckpt", "epoch_001.ckpt"]
    ck = torch.load(run_dir / "checkpoints" / "epoch_001.ckpt", weights_only=True)
    assert {k.split(".")[1] for k in ck["state_dict"]} == ({"projector"} if "train_vision=false" in str(CASES[name])
                                                           else {"vision", "projector"})  # frozen parts not saved

    r = call("vlm.eval", f"ckpt={run_dir}", *common, "hydra.run.dir=" + str(tmp_path / "eval"))
    assert r.code == 0, r.stderr[-3000:]
    client = MlflowClient(tracking_uri=mlflow_uri)
    exp = client.get_experiment_by_name("vlm")
    rows = client.search_runs([exp.experiment_id], f"tags.eval_ckpt LIKE '{run_dir}%'")
    assert sorted(int(x.data.tags["epoch"]) for x in rows) == [1, 2]  # one row per saved epoch (last.ckpt repeats 2)
    assert all("test/logo_recall" in x.data.metrics and x.data.tags["task"] == "vlm.eval" for x in rows)
    train_id = (run_dir / "mlflow_run_id").read_text().strip()
    assert {x.data.tags["source_run_id"] for x in rows} == {train_id}
    # the evaluation of the best checkpoint reproduces the training run's own test of it
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    best = next(Path(v["best_model_path"]) for k, v in last["callbacks"].items() if k.startswith("ModelCheckpoint"))
    trained = json.loads((run_dir / "metrics.json").read_text())
    again = json.loads((tmp_path / "eval" / best.stem / "metrics.json").read_text())
    assert again["test/loss"] == pytest.approx(trained["test/loss"], rel=1e-5)

    test_jsonl = synth_dir(run_dir) / "test.jsonl"
    out = tmp_path / "captions.jsonl"
    r = call("vlm.generate", "--jsonl", str(test_jsonl), "--captioner", str(tmp_path / "eval" / "epoch_001" /
             "captioner"), "--out", str(out), "--max-new-tokens", "4")
    assert r.code == 0, r.stderr[-3000:]
    assert len(out.read_text().splitlines()) == len(test_jsonl.read_text().splitlines())


def test_untrained_eval_is_a_row_without_optimized_metric(tmp_path, vlm_cache, mlflow_uri):
    from mlflow import MlflowClient

    from tests.vlm.conftest import TINY

    r = call("vlm.eval", "ckpt=untrained", f"paths.cache_dir={vlm_cache}", f"paths.log_dir={tmp_path / 'logs'}",
             f"logger.mlflow.tracking_uri={mlflow_uri}", f"logger.mlflow.artifact_location={tmp_path / 'art'}",
             *TINY, "eval.max_new_tokens=4", "callbacks.progress_bar=null", "hydra.run.dir=" + str(tmp_path / "e"))
    assert r.code == 0, r.stderr[-3000:]
    metrics = json.loads((tmp_path / "e" / "untrained" / "metrics.json").read_text())
    assert "test/logo_recall" in metrics and "val/score" not in metrics
    client = MlflowClient(tracking_uri=mlflow_uri)
    (row,) = client.search_runs([client.get_experiment_by_name("vlm").experiment_id],
                                "tags.eval_ckpt = 'untrained' and tags.epoch = '0'", max_results=1)
    assert json.loads(row.data.tags["overrides"])[-2:] == ["ckpt=untrained", "epoch=0"]


def test_eval_takes_test_records_without_a_caption(tmp_path, vlm_cache):
    """Brand labels only (no caption): the same captions and recalls as with captions, and no test loss."""
    from tests.vlm.conftest import TINY

    def evaluate(name: str, *data: str) -> tuple[dict, list[str]]:
        r = run_cli("-m", "vlm.eval", "ckpt=untrained", f"paths.cache_dir={vlm_cache}", f"paths.log_dir={tmp_path / 'logs'}",
                    "logger=none", *TINY, *data, "eval.max_new_tokens=4", "callbacks.progress_bar=null",
                    "hydra.run.dir=" + str(tmp_path / name))
        assert r.returncode == 0, r.stderr[-3000:]
        run = tmp_path / name / "untrained"
        preds = [json.loads(x)["pred"] for x in (run / "predictions_test.jsonl").read_text().splitlines()]
        return json.loads((run / "metrics.json").read_text()), preds

    with_cap, preds = evaluate("with")  # the synthetic set, captions included
    data = synth_dir(tmp_path / "with")  # the set the first evaluation read
    rows = [json.loads(line) for line in (data / "test.jsonl").read_text().splitlines()]
    without = tmp_path / "without.jsonl"
    without.write_text("".join(json.dumps({k: v for k, v in r.items() if k not in ("caption", "conversations")}) + "\n"
                               for r in rows))
    no_cap, preds2 = evaluate("without", "data=jsonl", f"data.train_file={data / 'train.jsonl'}",
                              f"data.val_file={data / 'val.jsonl'}", f"data.test_file={without}",
                              f"data.image_root={data}")
    assert "test/loss" in with_cap and "test/loss" not in no_cap
    recalls = {k: v for k, v in with_cap.items() if k.startswith("test/") and k.endswith("recall")}
    assert recalls and recalls == {k: no_cap[k] for k in recalls}
    assert preds == preds2 and len(preds) == len(rows)
