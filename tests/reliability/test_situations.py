"""Malformed situations rather than malformed files: signals, outputs that are also inputs, concurrent writers,
degenerate data, mistaken checkpoints. Each case asserts the exit code, the one ``error:`` line, and that
nothing was lost or half-written (inputs unchanged, no RUNNING runs, no ``*.tmp`` files)."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli

TOY = "tests.common.toy.train"


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def _runs(uri: str) -> list:
    from mlflow import MlflowClient

    c = MlflowClient(tracking_uri=uri)
    return [r for e in c.search_experiments() for r in c.search_runs([e.experiment_id])]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _no_tmp(root: Path) -> list[Path]:
    return [p for p in root.rglob("*.tmp")]


# ---------------------------------------------------------------- signals


def _toy_args(tmp_path: Path, uri: str, *extra: str) -> list[str]:
    return ["-m", TOY, f"paths.log_dir={tmp_path / 'logs'}", f"logger.mlflow.tracking_uri={uri}",
            f"logger.mlflow.artifact_location={tmp_path / 'artifacts'}", "callbacks.progress_bar=null",
            "callbacks.early_stopping=null", "trainer.max_epochs=3", *extra]


@pytest.mark.parametrize("sig, code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_signal_during_fit_exits_non_zero_ends_the_run_killed_and_resumes(tmp_path, sig, code):
    """Lightning's SIGTERMException is a SystemExit(0): a killed run used to exit 0 with no error line."""
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    args = _toy_args(tmp_path, uri)
    ended = run_cli(*args, env={"TOY_SIGNAL_AT_STEP": "7", "TOY_SIGNAL": sig})  # 5 steps per epoch: in epoch 1
    assert ended.returncode == code, ended.stderr[-3000:]
    assert _errors(ended.stderr) == [
        f"error: stopped by {sig}; the MLflow run is marked KILLED (a training resumes with ckpt_path=last)"
    ], ended.stderr[-3000:]
    assert "Traceback" not in ended.stderr
    (run,) = _runs(uri)
    assert run.info.status == "KILLED"
    (last,) = (tmp_path / "logs").rglob("last.ckpt")
    assert not (last.parent.parent / "metrics.json").exists()

    # resuming is not about the process: in this process (a fresh interpreter is ~7 s of imports)
    from tests.reliability.harness import call

    resumed = call(TOY, *args[2:], "ckpt_path=last")
    assert resumed.code == 0, resumed.stderr[-3000:]
    (run,) = _runs(uri)  # the same MLflow run, continued
    assert run.info.status == "FINISHED"
    assert "test/loss" in run.data.metrics


def test_a_sigterm_before_the_trainer_starts_is_the_same_one_line(tmp_path):
    """Outside Lightning (building data) the default SIGTERM killed the process with no cleanup at all."""
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    ended = run_cli(*_toy_args(tmp_path, uri), env={"TOY_SIGNAL_IN_DATA": "SIGTERM"})
    assert ended.returncode == 143, ended.stderr[-3000:]
    assert len(_errors(ended.stderr)) == 1 and "stopped by SIGTERM" in ended.stderr
    assert all(r.info.status != "RUNNING" for r in _runs(uri)) if (tmp_path / "mlruns.db").exists() else True


def test_an_unexpected_exception_is_one_line_naming_the_log_with_the_traceback_in_it(tmp_path):
    ended = run_cli("-m", TOY, f"paths.log_dir={tmp_path / 'logs'}", "logger=none", "callbacks.progress_bar=null",
                    "module.fail=true")
    assert ended.returncode == 1
    (line,) = _errors(ended.stderr)
    m = re.fullmatch(r"error: unexpected RuntimeError: toy job told to fail \(a bug, not your input; traceback in (\S+)\)", line)
    assert m, line
    assert "Traceback" not in ended.stderr and "Traceback" not in ended.stdout
    log = Path(m.group(1)).read_text(encoding="utf-8")
    assert "Traceback (most recent call last)" in log and "toy job told to fail" in log


# ---------------------------------------------------------------- concurrent writers


def test_two_processes_on_a_new_mlflow_store_both_succeed(tmp_path):
    """mlflow migrates a new sqlite store on first use; two at once died in alembic (``0 found``)."""
    script = (
        "import sys; from common import tracking; "
        "print(tracking.experiment_id(sys.argv[1], 'race', sys.argv[2]))"
    )
    results = []
    for attempt in range(3):  # the race is real but narrow: several fresh stores
        uri = f"sqlite:///{tmp_path / f'store{attempt}.db'}"
        procs = [subprocess.Popen([sys.executable, "-c", script, uri, str(tmp_path / "art")], cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        outs = [p.communicate(timeout=300) for p in procs]
        results.append([(p.returncode, o[0].strip(), o[1][-500:]) for p, o in zip(procs, outs, strict=True)])
    for pair in results:
        assert [rc for rc, _, _ in pair] == [0, 0], pair
        assert pair[0][1] == pair[1][1], pair  # one experiment, the same id for both


def test_a_joblib_sweep_on_a_new_store_records_every_job(tmp_path):
    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    args = _toy_args(tmp_path, uri, "trainer.max_epochs=1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                     "module.lr=0.01,0.02")
    ended = run_cli(*args[:2], "--multirun", *args[2:], timeout=900)
    assert ended.returncode == 0, ended.stderr[-3000:]
    runs = _runs(uri)
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * 3  # the parent and both jobs


# ---------------------------------------------------------------- outputs that are also inputs

def _refused_before_work(ended, key: str, path: Path) -> None:
    assert ended.code == 2, ended.stderr[-3000:]
    assert ended.error_lines == [f"error: {key}: {path} is also the input {ended.input_key}; writing it would destroy "
                                 "the input, choose another output path"], ended.stderr[-3000:]


@pytest.mark.parametrize("how", ["same path", "symlink", "hard link"])
def test_textcls_predict_refuses_to_write_over_its_input(tmp_path, how):
    from tests.reliability.harness import call

    src = tmp_path / "gold.jsonl"
    src.write_text('{"text": "新车谍照曝光", "doc_label": ["新车资讯--谍照"]}\n' * 3, encoding="utf-8")
    out = src
    if how == "symlink":
        out = tmp_path / "link.jsonl"
        out.symlink_to(src)
    elif how == "hard link":
        out = tmp_path / "hard.jsonl"
        os.link(src, out)
    before = _digest(src)
    ended = call("textcls.predict", f"ckpt={tmp_path / 'model.ckpt'}", f"input={src}", f"output={out}",
                 f"hydra.run.dir={tmp_path / 'run'}")
    ended.input_key = "input"
    _refused_before_work(ended, "output", out)
    assert _digest(src) == before and not _no_tmp(tmp_path)


def test_retrieval_mine_refuses_to_write_over_its_input(tmp_path):
    from tests.reliability.harness import call

    src = tmp_path / "train.jsonl"
    src.write_text('{"query": "a", "pos": ["b"], "neg": ["c", "d"]}\n', encoding="utf-8")
    before = _digest(src)
    ended = call("retrieval.mine", f"input_file={src}", f"output_file={src}", f"hydra.run.dir={tmp_path / 'run'}",
                 f"paths.log_dir={tmp_path / 'logs'}")
    ended.input_key = "input_file"
    _refused_before_work(ended, "output_file", src)
    assert _digest(src) == before


def test_retrieval_match_refuses_to_write_over_its_input(tmp_path):
    from tests.reliability.harness import call

    src = tmp_path / "postings.csv"
    src.write_text("posting_id,image,image_phash,title\np1,a.jpg,ff,T\n", encoding="utf-8")
    before = _digest(src)
    ended = call("retrieval.match", f"ckpt={tmp_path / 'm.ckpt'}", f"input={src}", f"output={src}",
                 f"hydra.run.dir={tmp_path / 'run'}", f"paths.log_dir={tmp_path / 'logs'}")
    ended.input_key = "input"
    _refused_before_work(ended, "output", src)
    assert _digest(src) == before


def test_vlm_generate_refuses_to_write_over_its_input(tmp_path):
    from vlm.generate import main

    src = tmp_path / "items.jsonl"
    src.write_text('{"id": "1", "image": "a.png"}\n', encoding="utf-8")
    before = _digest(src)
    import contextlib
    import io as _io

    err = _io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["--jsonl", str(src), "--out", str(src)])
    assert code == 2
    assert err.getvalue().strip() == (f"error: --out: {src} is also the input --jsonl; writing it would destroy the input, "
                                      "choose another output path")
    assert _digest(src) == before


# ---------------------------------------------------------------- duplicate primary keys, empty texts

def _deepmatcher(folder: Path, table_a: str, table_b: str = "id,name\n1,beta phone\n") -> Path:
    folder.mkdir()
    (folder / "tableA.csv").write_text(table_a, encoding="utf-8")
    (folder / "tableB.csv").write_text(table_b, encoding="utf-8")
    (folder / "matches.csv").write_text("tableA_id,tableB_id\n1,1\n", encoding="utf-8")
    return folder


@pytest.mark.parametrize("table_a, line", [
    ("id,name\n1,alpha phone\n2,gamma tv\n1,delta radio\n", "{f}/tableA.csv:4: duplicate id '1' (first seen on line 2)"),
    ('id,name\n1,alpha phone\n2,""\n', "{f}/tableA.csv:3: empty text in name"),
])
def test_deepmatcher_duplicate_ids_and_empty_texts_are_file_line_errors(tmp_path, table_a, line):
    from tests.reliability.corpus import DM
    from tests.reliability.harness import call

    folder = _deepmatcher(tmp_path / "dm", table_a)
    args = [a.format(tmp=tmp_path) for a in DM]
    ended = call("retrieval.train", *args, f"data.path={folder}")
    assert ended.code == 2, ended.stderr[-3000:]
    assert ended.error_lines == [f"error: {line.format(f=folder)}"], ended.stderr[-3000:]
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("reader", ["query_gallery", "jsonl"])
def test_a_repeated_id_in_a_jsonl_reader_names_the_second_line(tmp_path, reader):
    from common.data.records import read_jsonl
    from common.errors import DataError
    from retrieval.data import read_query_gallery

    q = tmp_path / "q.jsonl"
    q.write_text('{"id": 7, "title": "a", "group": "g"}\n\n{"id": "7", "title": "b", "group": "g"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(f"{q}:3: duplicate id '7' (first seen on line 1)")):
        read_query_gallery(q, q) if reader == "query_gallery" else read_jsonl(q, unique="id")


# ---------------------------------------------------------------- degenerate labels

def _tc_train(tmp_path, rows: list[str], *extra: str):
    from tests.reliability.corpus import JSONL
    from tests.reliability.harness import call

    f = tmp_path / "train.jsonl"
    f.write_text("".join(r + "\n" for r in rows), encoding="utf-8")
    args = [a.format(tmp=tmp_path) for a in JSONL]
    return f, call("textcls.train", *args, f"data.train_file={f}", *extra)


@pytest.mark.parametrize("task, expected", [
    ("multiclass", "every training record has the label '新车资讯'; a multiclass task needs at least two classes"),
    ("multilabel", "every training record has the label(s) '新车资讯'; nothing to tell apart"),
    ("binary", "every training record has the label(s) '新车资讯'; nothing to tell apart (data.positive_label='新车资讯' needs records without it too)"),
])
def test_a_training_file_with_one_label_only_is_refused(tmp_path, task, expected):
    rows = [f'{{"text": "新车 第{i}款 上市", "doc_label": ["新车资讯"]}}' for i in range(40)]
    f, ended = _tc_train(tmp_path, rows, f"data.task={task}", *(["data.positive_label='新车资讯'"] if task == "binary" else []))
    assert ended.code == 2, ended.stderr[-3000:]
    assert ended.error_lines == [f"error: {f}: {expected}"], ended.stderr[-3000:]
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_label_with_one_record_stays_in_the_training_part(tmp_path):
    """It used to land in val / test at random and fail as 'not one of the model's labels' at its position there."""
    from textcls.data import TextDataModule
    from textcls.schemas import DataConfig

    rows = [{"text": f"新车 第{i}款 上市", "doc_label": ["新车资讯--新车上市"]} for i in range(30)]
    rows += [{"text": f"球赛 第{i}场", "doc_label": ["其他"]} for i in range(30)]
    rows.insert(17, {"text": "谍照 曝光 路试", "doc_label": ["新车资讯--谍照"]})
    f = tmp_path / "train.jsonl"
    import json

    f.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    for seed in range(8):  # whatever the split seed, the rare label is learnt, not refused
        dm = TextDataModule(DataConfig(source="jsonl", task="multilabel", train_file=str(f), split_seed=seed))
        assert "新车资讯--谍照" in dm.space.labels
        assert any("新车资讯--谍照" in d.labels for d in dm.train.docs)
        assert len(dm.train) + len(dm.val) + len(dm.test) == len(rows)


# ---------------------------------------------------------------- checkpoint mistakes in *.train

def test_train_ckpt_path_mistakes_are_one_line_before_any_work(tmp_path):
    import torch

    from tests.reliability.corpus import TRAIN
    from tests.reliability.harness import call

    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint\n", encoding="utf-8")
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"encoder.embed.weight": torch.zeros(3, 2)}}, other)
    wider = tmp_path / "wider.ckpt"
    torch.save({"state_dict": {"net.weight": torch.zeros(1, 4), "net.bias": torch.zeros(1)}}, wider)
    args = [a.format(tmp=tmp_path) for a in TRAIN]
    expected = {
        text: rf"error: ckpt_path: {re.escape(str(text))} is not a readable Lightning checkpoint \(UnpicklingError: .+\)",
        other: rf"error: ckpt_path: {re.escape(str(other))} is a checkpoint of another model, not ToyModule: 2 of its 2 "
               r"weights missing \(e\.g\. \['net\.bias'\]\), 1 unknown \(e\.g\. \['encoder\.embed\.weight'\]\)",
        wider: rf"error: ckpt_path: {re.escape(str(wider))} has net\.weight of shape \[1, 4\], this config builds \[1, 8\] "
               r"\(another label space or model size\); resume with the config it was trained with",
    }
    for path, line in expected.items():
        ended = call(TOY, *args, f"ckpt_path={path}")
        assert ended.code == 2, ended.stderr[-3000:]
        assert len(ended.error_lines) == 1 and re.fullmatch(line, ended.error_lines[0]), ended.stderr[-3000:]
        assert "weights_only=False" not in ended.stderr and "Traceback" not in ended.stderr
        assert not (tmp_path / "run" / "checkpoints").exists()


# The server's bounds (chunked bodies, JSON, image headers) are tested in tests/vlm/test_serve_faults.py.


def test_an_unwritable_log_dir_is_one_line(tmp_path):
    """Hydra makes the run dir before the job starts: its OSError was a raw traceback."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory\n")
    ended = run_cli("-m", TOY, f"paths.log_dir={blocker}/logs", "logger=none")
    assert ended.returncode == 2, ended.stderr[-3000:]
    (line,) = _errors(ended.stderr)
    assert line.startswith(f"error: paths.log_dir: cannot create the run directory {blocker}/logs") and "Traceback" not in ended.stderr


def test_an_unquoted_chinese_value_says_how_to_quote_it(tmp_path):
    """Hydra's grammar refuses ``data.positive_label=新车资讯`` with a bare LexerNoViableAltException."""
    from tests.reliability.harness import call

    ended = call("textcls.train", "data.positive_label=新车资讯", f"hydra.run.dir={tmp_path / 'run'}")
    assert ended.code == 2
    assert ended.error_lines == ["error: data.positive_label: Hydra's override grammar needs a value like '新车资讯' "
                                 "quoted: \"data.positive_label='新车资讯'\" (single quotes inside the shell's double quotes)"]
