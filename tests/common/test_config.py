from dataclasses import dataclass, field

import pytest
from omegaconf import OmegaConf

from common.config import validate
from common.errors import ConfigError
from tests.conftest import run_cli


def test_typo_in_a_trainer_key_names_the_key_and_suggests(toy_cfg):
    cfg = toy_cfg("+exp=typo")
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    assert str(e.value) == "trainer.max_epoch: not a parameter of lightning.pytorch.Trainer (did you mean 'max_epochs'?)"


def test_wrong_type_for_an_annotated_parameter(toy_cfg):
    cfg = toy_cfg("module.lr=fast")
    with pytest.raises(ConfigError, match=r"^module.lr: expected float, got str 'fast'$"):
        validate(cfg)


def test_unknown_target(toy_cfg):
    cfg = toy_cfg("data._target_=tests.common.toy.model.Nope")
    with pytest.raises(ConfigError, match="cannot import _target_ 'tests.common.toy.model.Nope'"):
        validate(cfg)


@dataclass
class Lora:
    r: int = 16
    alpha: int = 32
    targets: list[str] = field(default_factory=lambda: ["q_proj"])


@dataclass
class Model:
    name_or_path: str = "tiny"
    lora: Lora = field(default_factory=Lora)


def test_dataclass_schema_unknown_key_and_wrong_type():
    cfg = OmegaConf.create({"model": {"name_or_path": "x", "lora": {"rr": 4}}})
    with pytest.raises(ConfigError, match=r"^model.lora.rr: unknown key \(did you mean 'r'\?\)$"):
        validate(cfg, {"model": Model})
    cfg = OmegaConf.create({"model": {"lora": {"r": "big"}}})
    with pytest.raises(ConfigError, match=r"^model.lora.r: "):
        validate(cfg, {"model": Model})
    cfg = OmegaConf.create({"model": {"lora": {"r": "8"}}})
    assert validate(cfg, {"model": Model}).model.lora.r == 8  # converted, defaults filled
    assert validate(cfg, {"model": Model}).model.lora.alpha == 32


def test_cli_typo_exits_nonzero_with_one_line(tmp_path):
    res = run_cli("-m", "tests.common.toy.train", "+exp=typo", "logger=none", f"paths.log_dir={tmp_path}")
    assert res.returncode == 2, res.stderr
    err_lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert err_lines == ["error: trainer.max_epoch: not a parameter of lightning.pytorch.Trainer (did you mean 'max_epochs'?)"]
    assert not list(tmp_path.glob("**/checkpoints"))


def test_cli_typo_without_plus_gets_the_same_did_you_mean_and_leaves_no_run_dir(tmp_path):
    res = run_cli("-m", "tests.common.toy.train", "trainer.max_epoch=3", "logger=none", f"paths.log_dir={tmp_path}")
    assert res.returncode == 2, res.stderr
    assert [x for x in res.stderr.splitlines() if x.strip()] == [
        "error: trainer.max_epoch: not a parameter of lightning.pytorch.Trainer (did you mean 'max_epochs'?)"]
    assert not list(tmp_path.iterdir())


def test_config_failing_validation_leaves_no_run_dir(tmp_path):
    res = run_cli("-m", "tests.common.toy.train", "+exp=typo", "logger=none", f"paths.log_dir={tmp_path}")
    assert res.returncode == 2, res.stderr
    assert not list(tmp_path.rglob("*")), list(tmp_path.rglob("*"))


def test_help_shows_usage_own_and_shared_groups_not_another_entry_points():
    res = run_cli("-m", "vlm.train", "--help")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert out.startswith("usage: python -m vlm.train ") and "train the brand captioner" in out
    own, shared = out.split("== vlm groups ==")[1].split("== shared groups ==")
    assert "+exp=" in own and "lora" in own and "data=" in own
    for group in ("trainer=", "logger=", "callbacks=", "run.name="):
        assert group in shared
    assert "annotate" not in out  # vlm.annotate's group
