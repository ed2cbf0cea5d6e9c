"""Checkpoints are only ever loaded as data: torch.load(weights_only=True) or safetensors, never pickle."""

import ast
import re
from pathlib import Path

import pytest
import torch

from tests.reliability.harness import call

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["common", "vlm", "textcls", "retrieval"]


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            yield name, node


def test_every_torch_load_and_trainer_restore_is_weights_only():
    offenders = []
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for name, node in _calls(tree):
                kw = {k.arg: k.value for k in node.keywords}
                where = f"{path.relative_to(ROOT)}:{node.lineno}"
                if name == "load" and isinstance(node.func, ast.Attribute) and getattr(node.func.value, "id", "") == "torch":
                    if not (isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True):
                        offenders.append(f"{where}: torch.load without weights_only=True")
                if name in ("load_from_checkpoint",):
                    if not (isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True):
                        offenders.append(f"{where}: {name} without weights_only=True")
                if name in ("fit", "test", "validate", "predict") and "ckpt_path" in kw:
                    if not (isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True):
                        offenders.append(f"{where}: Trainer.{name}(ckpt_path=...) without weights_only=True")
                if name in ("loads", "load") and getattr(node.func, "value", None) is not None and getattr(node.func.value, "id", "") == "pickle":
                    offenders.append(f"{where}: pickle.{name}")
    assert not offenders, "\n".join(offenders)


def test_a_run_helper_checkpoint_loads_weights_only(toy_cfg):
    from common import run

    cfg = toy_cfg("logger=none", "trainer.max_epochs=1", "callbacks.progress_bar=null")
    run.train(cfg)
    state = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    assert "state_dict" in state and "RngState" in str(state["callbacks"].keys())


@pytest.mark.parametrize("module, cls", [("textcls.eval", "TextClassifier"), ("retrieval.eval", "RetrievalModule")])
def test_another_packages_checkpoint_is_one_line(toy_cfg, tmp_path, module, cls):
    """A real Lightning checkpoint of the wrong module: one line naming the key and the file, no traceback."""
    from common import run

    cfg = toy_cfg("logger=none", "trainer.max_epochs=1", "callbacks.progress_bar=null", "test=false")
    run.train(cfg)
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    data = tmp_path / "data.jsonl"
    data.write_text('{"text": "a", "doc_label": ["其他"]}\n', encoding="utf-8")
    ended = call(module, f"ckpt={ckpt}", f"data={data}" if module == "textcls.eval" else f"data.path={tmp_path}",
                 "logger=none", f"hydra.run.dir={tmp_path}/run")
    assert ended.code == 2 and "Traceback" not in ended.stderr, ended.stderr[-3000:]
    assert len(ended.error_lines) == 1, ended.stderr[-3000:]
    assert re.fullmatch(rf"error: ckpt: {re.escape(str(ckpt))} is not a readable {cls} checkpoint \(\w+: .+\)", ended.error_lines[0]), ended.error_lines[0]
    assert not (tmp_path / "run" / "metrics.json").exists()
