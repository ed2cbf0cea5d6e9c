"""The corpus of bad inputs (:mod:`tests.reliability.corpus`): each case ends with exactly one ``error: ...``
line, a non-zero exit, and no partial output.

Cases run in-process (:func:`tests.reliability.harness.call`); two go through a real interpreter to prove
the exit code on the command line.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.reliability.bad_inputs import make_bad_inputs
from tests.reliability.corpus import CASES, FAILS_AFTER_TRAINING, TABLES
from tests.reliability.harness import call


def _leftovers(run_dir: Path, tmp: Path) -> list[str]:
    """What a failed run left besides Hydra's ``.hydra/`` and log file, and any unfinished atomic write."""
    kept = [p for p in run_dir.rglob("*") if p.is_file() and ".hydra" not in p.parts and p.suffix != ".log"]
    half = [p for p in tmp.rglob("*.tmp") if p.is_file()]
    return [str(p) for p in kept + half]


@pytest.mark.parametrize("case_id, module, args, expected, absent", CASES, ids=[c[0] for c in CASES])
def test_bad_input_ends_cleanly(case_id, module, args, expected, absent, tmp_path):
    bad = tmp_path / "bad"
    make_bad_inputs(bad)
    fill = lambda s: s.replace("{tmp}", str(tmp_path)).replace("{bad}", str(bad))  # noqa: E731
    name, _, attr = module.partition(":")
    ended = call(name, *[fill(a) for a in args], attr=attr or "main")
    assert ended.code == 2, ended.stderr[-3000:]
    assert len(ended.error_lines) == 1, ended.stderr[-3000:]
    pattern = expected.replace("{tmp}", re.escape(str(tmp_path))).replace("{bad}", re.escape(str(bad)))
    assert re.fullmatch(pattern, ended.error_lines[0]), ended.error_lines[0]
    assert "Traceback" not in ended.stderr, ended.stderr[-3000:]
    for path in absent:
        assert not Path(fill(path)).exists(), f"{case_id}: left {fill(path)} behind"
    if case_id not in FAILS_AFTER_TRAINING:
        assert not _leftovers(tmp_path / "run", tmp_path), f"{case_id}: left {_leftovers(tmp_path / 'run', tmp_path)}"


def test_common_report_bad_filter_is_one_line(mlflow_uri, tmp_path):
    ended = call("common.report", "--tracking-uri", mlflow_uri, "--experiment", "nope", "--out", str(tmp_path / "r"))
    assert ended.code == 2 and ended.error_lines == [f"error: no MLflow experiment named 'nope' in {mlflow_uri}"]
    assert not list(tmp_path.glob("r.*"))


@pytest.mark.parametrize(
    "args, line",
    [
        (["host=0.0.0.0"], "error: host: '0.0.0.0' would expose the server beyond this machine; set allow_remote=true to mean it"),
        (["+exp=nope"], "error: In 'serve': Could not find 'exp/nope'; Available options in 'exp': crop, "),
    ],
    ids=["user-error", "hydra-composition-error"],
)
def test_exit_code_on_the_real_command_line(tmp_path, args, line):
    """A fresh interpreter (vlm.serve fails before loading any model, so this costs about a second)."""
    res = run_cli("-m", "vlm.serve", *args, f"paths.log_dir={tmp_path}", f"hydra.run.dir={tmp_path}/run")
    assert res.returncode == 2, res.stderr[-3000:]
    lines = [text for text in res.stderr.splitlines() if text.strip()]
    assert len(lines) == 1 and lines[0].startswith(line), res.stderr[-3000:]


def test_corpus_covers_every_package_with_at_least_30_cases():
    """Counted from the tables the parametrized test runs, not from the source text."""
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids)), "case ids must be unique"
    assert len(CASES) >= 30
    assert {name: len(table) >= 5 for name, table in TABLES.items()} == dict.fromkeys(TABLES, True)
    entry_points = {c[1].partition(":")[0] for c in CASES}
    assert entry_points >= {"textcls.train", "textcls.eval", "textcls.predict", "vlm.train", "vlm.serve", "vlm.annotate",
                            "retrieval.train", "retrieval.mine", "retrieval.eval"}
