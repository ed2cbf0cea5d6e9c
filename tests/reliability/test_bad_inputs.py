"""The corpus of bad inputs: each ends with exactly one ``error: ...`` line, a non-zero exit, and no
partial output.

Each case: (id, module, args, expected error line regex, paths that must not exist afterwards).
Paths use ``{tmp}`` for the case's temp dir and ``{bad}`` for the prepared bad-input folder.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.reliability.harness import call

TOY = "tests.common.toy.train"
COMMON = ["logger=none", "callbacks.progress_bar=null", "paths.log_dir={tmp}/logs", "hydra.run.dir={tmp}/run"]


def make_bad_inputs(root: Path) -> None:
    """Files that are wrong in one way each."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "not_json.jsonl").write_text('{"a": 1}\n{oops\n', encoding="utf-8")
    (root / "empty.jsonl").write_text("\n\n", encoding="utf-8")
    (root / "aliases_bad.json").write_text("{not json", encoding="utf-8")
    (root / "dir.jsonl").mkdir(exist_ok=True)


CASES = [
    ("trainer-key-typo", TOY, ["trainer.max_epoch=1"], r"Could not override 'trainer.max_epoch'", []),
    ("yaml-overlay-typo", TOY, ["+exp=typo"], r"^error: trainer\.max_epoch: not a parameter of lightning\.pytorch\.Trainer \(did you mean 'max_epochs'\?\)$", ["{tmp}/run/checkpoints"]),
    ("wrong-type", TOY, ["module.lr=fast"], r"^error: module\.lr: expected float, got str 'fast'$", ["{tmp}/run/checkpoints"]),
    ("wrong-type-int", TOY, ["trainer.max_epochs=many"], r"^error: trainer\.max_epochs: expected int or null, got str 'many'$", []),
    ("unknown-target", TOY, ["data._target_=tests.common.toy.model.Nope"], r"^error: cannot import _target_ 'tests\.common\.toy\.model\.Nope'$", []),
    ("unknown-module-key", TOY, ["+module.lrr=0.1"], r"^error: module\.lrr: not a parameter of tests\.common\.toy\.model\.ToyModule \(did you mean 'lr'\?\)$", []),
    ("missing-ckpt", TOY, ["ckpt_path={tmp}/nope.ckpt"], r"^error: ckpt_path: no checkpoint file at .*/nope\.ckpt$", ["{tmp}/run/checkpoints"]),
    ("resume-without-run", TOY, ["ckpt_path=last"], r"^error: ckpt_path=last: no earlier toy\.train run", []),
    ("unknown-optimized-metric", TOY, ["optimized_metric=val/acc", "trainer.max_epochs=1"], r"^error: optimized_metric: 'val/acc' was not logged", ["{tmp}/run/metrics.json"]),
    ("unknown-exp", TOY, ["+exp=nope"], r"Could not find 'exp/nope'", []),
    ("unknown-trainer-option", TOY, ["trainer=tpu"], r"Could not find 'trainer/tpu'", []),
]


@pytest.mark.parametrize("case_id, module, args, expected, absent", CASES, ids=[c[0] for c in CASES])
def test_bad_input_ends_cleanly(case_id, module, args, expected, absent, tmp_path):
    bad = tmp_path / "bad"
    make_bad_inputs(bad)
    fill = lambda s: s.format(tmp=tmp_path, bad=bad)  # noqa: E731
    ended = call(module, *[fill(a) for a in COMMON + args])
    assert ended.code != 0
    if expected.startswith("^error: "):
        assert len(ended.error_lines) == 1, ended.stderr[-3000:]
        assert re.match(expected, ended.error_lines[0]), ended.error_lines[0]
    else:  # Hydra's own composition errors: not ours to reword, but they must name the key
        assert re.search(expected, ended.stderr), ended.stderr[-3000:]
    for path in absent:
        assert not Path(fill(path)).exists(), f"{case_id}: left {fill(path)} behind"


def test_common_report_bad_filter_is_one_line(mlflow_uri, tmp_path):
    from common import report

    ended = call("common.report", "--tracking-uri", mlflow_uri, "--experiment", "nope", "--out", str(tmp_path / "r"))
    assert ended.code == 2 and ended.error_lines == [f"error: no MLflow experiment named 'nope' in {mlflow_uri}"]
    assert not list(tmp_path.glob("r.*"))
    assert report  # imported for the in-process call


def test_exit_code_on_the_real_command_line(tmp_path):
    res = run_cli("-m", TOY, "module.lr=fast", "logger=none", f"paths.log_dir={tmp_path}", f"hydra.run.dir={tmp_path}/run")
    assert res.returncode == 2
    assert [line for line in res.stderr.splitlines() if line.strip()] == ["error: module.lr: expected float, got str 'fast'"]


def test_corpus_size():
    """The issue asks for at least 30 cases across readers and configs (packages add theirs)."""
    import tests.reliability as pkg

    n = 0
    for f in Path(pkg.__file__).parent.glob("test_*.py"):
        text = f.read_text(encoding="utf-8")
        n += len(re.findall(r'^\s+\("[a-z0-9-]+", ', text, flags=re.M))
    assert n >= len(CASES)
    json.dumps(n)
