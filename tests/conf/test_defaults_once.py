"""Each default is said once: in a dataclass schema (or, for a ``_target_`` node, in its YAML), never in both.

The schemas (``<package>/schemas.py``) hold the defaults of the nodes they describe; every YAML option of such
a node starts ``defaults: [/schema/<package>/<node>@_here_, _self_]`` and says only what differs. This walks
every option and fails on a value it restates, on the default option contradicting its schema (the drift this
replaced: ``n_groups`` 400 in Python and 300 in YAML), and on a ``_target_`` YAML key that the target's
signature also defaults. Old key spellings fail at start-up naming the new one.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import retrieval.schemas
import textcls.schemas
import vlm.schemas
from common.config import RENAMED, ConfigError, _import, validate
from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parents[2]
NODES = {"vlm": vlm.schemas.NODES, "textcls": textcls.schemas.NODES, "retrieval": retrieval.schemas.SCHEMAS}


def _plain(value):
    return OmegaConf.to_container(OmegaConf.create({"x": value}))["x"] if dataclasses.is_dataclass(value) or isinstance(value, list | dict) else value


def _restated(node: dict, schema, path: str = "") -> list[tuple[str, object, object]]:
    """``(key, yaml value, schema default)`` for every key of ``node``; nested schemas recursively."""
    out = []
    for key, value in node.items():
        if key == "defaults":
            continue
        default = getattr(schema, key)
        if dataclasses.is_dataclass(default) and isinstance(value, dict):
            out += _restated(value, default, f"{path}{key}.")
        else:
            out.append((f"{path}{key}", value, _plain(default)))
    return out


def _options() -> list[tuple[str, str, Path]]:
    """``(package, node, yaml file)`` for every group option in conf/<package>/<node>/ that has a schema."""
    return [(pkg, node, f) for pkg, nodes in NODES.items() for node in nodes
            for f in sorted((ROOT / "conf" / pkg / node).glob("*.yaml"))]


def _default_option(pkg: str, node: str) -> str | None:
    for entry in OmegaConf.load(ROOT / "conf" / pkg / "train.yaml").defaults:
        if OmegaConf.is_dict(entry) and node in entry:
            return str(entry[node])
    return None


def _is_reference(value) -> bool:  # an interpolation or a required ??? is not a default
    return isinstance(value, str) and (value.startswith("${") or value == "???")


@pytest.mark.parametrize("pkg, node, path", _options(), ids=lambda x: x.name if isinstance(x, Path) else str(x))
def test_yaml_options_say_only_what_differs_from_their_schema(pkg, node, path):
    raw = OmegaConf.to_container(OmegaConf.load(path))
    own = "_here_"
    if path.read_text().startswith("# @package _global_"):  # an option that also sets optim/scheduler
        own, raw = node, {"defaults": raw.get("defaults"), **raw.get(node, {})}
    # its node's schema, or another schema of the package for that node (model=hf_vlm: schema/vlm/hf_vlm)
    starts = [d for d in (raw.get("defaults") or []) if isinstance(d, str) and d.startswith(f"/schema/{pkg}/")
              and d.endswith(f"@{own}") and d[len(f"/schema/{pkg}/"):-len(f"@{own}")] in NODES[pkg]]
    assert starts, f"{path}: does not start from its schema"
    schema = NODES[pkg][starts[0][len(f"/schema/{pkg}/"):-len(f"@{own}")]]()
    same = [k for k, v, d in _restated(raw, schema) if v == d]
    assert not same, f"{path.relative_to(ROOT)} restates the schema defaults of {same}"
    if path.stem == _default_option(pkg, node):
        drift = [(k, v, d) for k, v, d in _restated(raw, schema)
                 if not _is_reference(v) and not isinstance(v, dict | list) and v != d]
        assert not drift, f"{path.relative_to(ROOT)} is the default option but contradicts its schema: {drift}"


TARGET_FILES = sorted(p for p in (ROOT / "conf").rglob("*.yaml") if "_target_" in OmegaConf.load(p) if p.parent.name == "model")


@pytest.mark.parametrize("path", TARGET_FILES, ids=lambda p: str(p.relative_to(ROOT / "conf")))
def test_target_yaml_and_its_signature_do_not_both_default_a_key(path):
    node = OmegaConf.to_container(OmegaConf.load(path))
    params = inspect.signature(_import(node["_target_"])).parameters
    both = [k for k in node if k in params and params[k].default is not inspect.Parameter.empty]
    assert not both, f"{path.relative_to(ROOT)}: {both} have a default in {node['_target_']} too"


def test_the_walk_catches_a_restated_default_and_drift(tmp_path):
    restating = {"defaults": ["/schema/textcls/data@_here_", "_self_"], "max_len": 96, "source": "jsonl"}
    assert [k for k, v, d in _restated(restating, textcls.schemas.DataConfig()) if v == d] == ["max_len"]
    drift = {"synth": {"n_groups": 400}}
    assert _restated(drift, retrieval.schemas.DataConfig()) == [("synth.n_groups", 400, 300)]


@pytest.mark.parametrize("old", sorted(RENAMED))
def test_old_spellings_fail_in_a_config_naming_the_new_key(old):
    node, _, leaf = old.partition(".")
    schema = {"module": textcls.schemas.ModuleConfig, "model": retrieval.schemas.ModelConfig, "data": retrieval.schemas.DataConfig,
              "pretrain": textcls.schemas.PretrainConfig, "optim": None}[node]
    if schema is None:  # vlm's optim is a _target_ node now; its old keys fail as unknown AdamW parameters
        cfg = OmegaConf.create({"optim": {"_target_": "torch.optim.AdamW", "_partial_": True, leaf: 1}})
        with pytest.raises(ConfigError, match=rf"^optim\.{leaf}: not a parameter of torch\.optim\.AdamW"):
            validate(cfg)
        return
    cfg = OmegaConf.create({node: {leaf: 1}})
    with pytest.raises(ConfigError, match=rf"^{old}: renamed to {RENAMED[old].split()[0]}"):
        validate(cfg, {node: schema})


@pytest.mark.parametrize("package, old, new", [("textcls", "module.lr=0.1", "optim.lr"), ("retrieval", "data.kind=shopee", "data.source"),
                                               ("vlm", "optim.lr_projector=0.01", "lr_groups.projector")])
def test_old_spelling_on_the_command_line_is_one_error_line(package, old, new):
    r = run_cli("-m", f"{package}.train", old)
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1] == f"error: {old.split('=')[0]}: renamed to {new}"
