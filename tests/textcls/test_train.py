"""The default tagger end to end: it learns, it logs, its checkpoint reloads, eval/predict work on new files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from omegaconf import OmegaConf

from common import run
from common.config import validate
from common.errors import ConfigError
from tests.conftest import run_cli
from tests.textcls.conftest import SMALL, compose_cfg
from textcls import decoding, scores, synth
from textcls.build import SCHEMAS, build
from textcls.inference import combine, load_checkpoint, read_eval_file


def _best(out: Path) -> Path:
    return next(p for p in (out / "checkpoints").glob("epoch_*.ckpt"))


def test_default_run_learns_far_beyond_an_untrained_model(trained):
    metrics = json.loads((trained["out"] / "metrics.json").read_text())
    # the untrained model, decoded as kindly as possible: thresholds tuned on validation like the trained one
    module, dm = build(trained["cfg"])
    pv, tv, _ = module.predict_loader(dm.val_dataloader())
    pt, tt, _ = module.predict_loader(dm.test_dataloader())
    untrained = scores.metrics(tt, module.decode(pt, decoding.tune_thresholds(pv, tv)), "hierarchical", dm.space.labels, dm.space.parents)
    # (tiny test-sized run: 1,280 training texts, 3 epochs; the full default reaches ~0.99 on both)
    assert metrics["test/gate_f1"] > 0.85 and metrics["test/gate_f1"] > untrained["gate_f1"] + 0.4
    assert metrics["test/micro_f1"] > 0.45 and metrics["test/micro_f1"] > untrained["micro_f1"] + 0.3
    assert trained["value"] == pytest.approx(metrics["val/micro_f1"])


def test_run_is_logged_with_report_plots_and_predictions(trained, mlflow_uri):
    out = trained["out"]
    r = MlflowClient(tracking_uri=mlflow_uri).get_run((out / "mlflow_run_id").read_text().strip())
    assert r.info.status == "FINISHED" and len(r.data.tags["data_fingerprint"]) == 16
    names = {a.path for a in MlflowClient(tracking_uri=mlflow_uri).list_artifacts(r.info.run_id, "eval")}
    assert {f"eval/{n}" for n in ("report.md", "metrics.json", "predictions.jsonl", "confusion.png", "pr_curve.png")} <= names
    report = (out / "eval" / "report.md").read_text(encoding="utf-8")
    assert re.search(r"precision: [\d.]+, recall: [\d.]+, fscore: [\d.]+, right: \d+, predict: \d+, standard: \d+", report)
    assert "| 新车资讯--新车解析 |" in report
    rows = [json.loads(line) for line in (out / "eval" / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    for row in rows:  # hierarchy-consistent: never a sub-tag without the gate
        assert all(label == "新车资讯" or "新车资讯" in row["labels"] for label in row["labels"] if label != "其他")


def test_checkpoint_reloads_to_the_same_test_metrics(trained):
    metrics = json.loads((trained["out"] / "metrics.json").read_text())
    model = load_checkpoint(_best(trained["out"]))
    _, dm = build(trained["cfg"])
    space, probs, pred, targets = combine([model], dm.test.docs)
    again = scores.metrics(targets, pred, space.task, space.labels, space.parents)
    assert again["micro_f1"] == pytest.approx(metrics["test/micro_f1"], abs=1e-6)
    # an intersection / union of a model with itself is the model
    for mode in ("intersection", "union", "mean"):
        assert np.array_equal(combine([model, model], dm.test.docs, mode)[2], pred)


def test_eval_cli_on_a_file_it_never_saw(trained, tmp_path):
    paths = synth.write_split(str(tmp_path / "unseen"), n=600, seed=99)
    res = run_cli(
        "-m", "textcls.eval", f"ckpt={_best(trained['out'])}", f"data={paths['test']}", "logger=none",
        f"hydra.run.dir={tmp_path / 'eval'}",
    )
    assert res.returncode == 0, res.stderr[-2000:]
    line = res.stdout.strip().splitlines()[-1]
    m = re.fullmatch(r"precision: ([\d.]+), recall: ([\d.]+), fscore: ([\d.]+), right: (\d+), predict: (\d+), standard: (\d+)", line)
    assert m, line
    gold = [json.loads(x)["doc_label"] for x in Path(paths["test"]).read_text(encoding="utf-8").splitlines()]
    # standard = gold labels incl. the implied gate
    assert int(m.group(6)) == sum(len(g) + 1 for g in gold if g != ["其他"])
    assert float(m.group(3)) > 0.45  # the tiny test model; the full default scores ~0.99
    assert (tmp_path / "eval" / "predictions.jsonl").exists() and (tmp_path / "eval" / "pr_curve.png").exists()


def test_eval_cli_bad_input_is_one_line_and_exit_2(trained, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "小米SU7上市", "doc_label": ["新车资讯--新车上市"]}\n{"text": "broken"\n', encoding="utf-8")
    res = run_cli("-m", "textcls.eval", f"ckpt={_best(trained['out'])}", f"data={bad}", "logger=none", f"hydra.run.dir={tmp_path}/e")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1].startswith(f"error: {bad}:2: invalid JSON")


def test_predict_writes_labels_and_scores(trained, tmp_path):
    from textcls.predict import predict

    src = tmp_path / "in.txt"
    src.write_text("比亚迪海豹正式上市 售价18.98万元起，哪款最值得买\n\n国足公布集训名单\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    predict(OmegaConf.create({"ckpt": str(_best(trained["out"])), "input": str(src), "output": str(out), "combine": "single", "batch_size": 8}))
    rows = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert [r["text"][:3] for r in rows] == ["比亚迪", "国足公"]
    assert "新车资讯--新车上市" in rows[0]["labels"] and rows[1]["labels"] == ["其他"]
    assert set(rows[0]["scores"]) == set(load_checkpoint(_best(trained["out"])).space.labels)


def test_eval_reader_refuses_labels_outside_the_model(trained, tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_text('{"text": "a", "doc_label": ["其他"]}\n{"text": "b", "doc_label": ["体育"]}\n', encoding="utf-8")
    from common.errors import DataError

    with pytest.raises(DataError, match=r"x.jsonl:2: label '体育' is not one of the model's labels"):
        read_eval_file(f, load_checkpoint(_best(trained["out"])))
    with pytest.raises(ConfigError, match="ckpt: no checkpoint file at"):
        load_checkpoint(tmp_path / "none.ckpt")


@pytest.mark.parametrize("exp", sorted(p.stem for p in (Path(__file__).parents[2] / "conf/textcls/exp").glob("*.yaml")))
def test_every_exp_overlay_composes_and_validates(exp, tmp_path):
    cfg = compose_cfg(tmp_path, f"+exp={exp}")
    validate(cfg, SCHEMAS)
    assert cfg.package == "textcls"


def test_a_typo_fails_at_start_up_with_its_key(tmp_path):
    cfg = compose_cfg(tmp_path, "+model.kernel_size=[3]")
    with pytest.raises(ConfigError, match=r"model.kernel_size: not a parameter of textcls.models.TextCNN \(did you mean 'kernel_sizes'\?\)"):
        run.train(cfg, build=build, schemas=SCHEMAS)
    cfg = compose_cfg(tmp_path, "+data.tokenize=word")
    with pytest.raises(ConfigError, match=r"data.tokenize: unknown key"):
        validate(cfg, SCHEMAS)


def test_two_stage_rare_model_replaces_its_column(trained, tmp_path):
    cfg = compose_cfg(tmp_path, *SMALL, "+exp=two_stage", "data.positive_label='新车资讯--新车报价'", "trainer.max_epochs=1")
    run.train(cfg, build=build, schemas=SCHEMAS)
    rare = load_checkpoint(_best(Path(cfg.paths.output_dir)))
    main = load_checkpoint(_best(trained["out"]))
    _, dm = build(trained["cfg"])
    docs = dm.test.docs
    space, probs, pred, _ = combine([main, rare], docs, "two_stage")
    j = space.index["新车资讯--新车报价"]
    rare_pred = rare.decode(combine([rare], docs)[1])[:, 0]
    assert np.array_equal(pred[:, j], rare_pred & pred[:, 0])  # the rare model decides, under the gate


def test_binary_eval_reports_the_positive_class_on_the_eight_row_case(tmp_path):
    """The defect's 8-row case through a real binary checkpoint and ``python -m textcls.eval``: the gold labels are
    chosen against the model's own predictions so that TP=1, FP=1, FN=1, TN=5 -> P = R = F1 = 0.5 (it said 0.833)."""
    cfg = compose_cfg(tmp_path, *SMALL, "data.task=binary")
    run.train(cfg, build=build, schemas=SCHEMAS)
    out = Path(cfg.paths.output_dir)
    metrics = json.loads((out / "metrics.json").read_text())
    model = load_checkpoint(_best(out))
    _, dm = build(cfg)
    space, probs, pred, targets = combine([model], dm.test.docs)
    tp, fp, fn = (int(((targets[:, 0] == a) & (pred[:, 0] == b)).sum()) for a, b in ((1, 1), (0, 1), (1, 0)))
    assert metrics["test/f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))  # the positive class, from counts
    assert metrics["test/f1"] > 0.8  # the gate is easy on synthetic data; the negatives' F1 would be ~0.99 too

    on = [d.text for d, p in zip(dm.test.docs, pred[:, 0], strict=True) if p == 1]
    off = [d.text for d, p in zip(dm.test.docs, pred[:, 0], strict=True) if p == 0]
    rows = [(on[0], 1), (off[0], 1), (on[1], 0), *((t, 0) for t in off[1:6])]  # TP, FN, FP, 5 x TN
    f = tmp_path / "eight.jsonl"
    f.write_text("".join(json.dumps({"text": t, "doc_label": ["新车资讯"] if y else ["其他"]}, ensure_ascii=False) + "\n"
                         for t, y in rows), encoding="utf-8")
    res = run_cli("-m", "textcls.eval", f"ckpt={_best(out)}", f"data={f}", "logger=none", f"hydra.run.dir={tmp_path / 'eval'}")
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1] == (
        "precision: 0.500000, recall: 0.500000, fscore: 0.500000, right: 1, predict: 2, standard: 2"
    )
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert (written["precision"], written["recall"], written["f1"]) == (0.5, 0.5, 0.5)


def test_knn_fewshot_vote_decides_its_labels(trained):
    import lightning.pytorch as pl

    from textcls.knn import knn_vote
    from textcls.module import TextClassifier

    ckpt = _best(trained["out"])
    base = load_checkpoint(ckpt)
    rare = ["新车资讯--预售", "新车资讯--预热"]
    knn = {**base.hparams.module, "knn_k": 5, "knn_labels": rare, "knn_threshold": 0.4}
    model = TextClassifier.load_from_checkpoint(str(ckpt), map_location="cpu", weights_only=True, module=knn)
    _, dm = build(trained["cfg"])
    pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False).test(model, datamodule=dm, verbose=False)
    _, bank_t, bank = model.predict_loader(dm.train_eval_dataloader(), embed=True)
    _, _, query = model.predict_loader(dm.test_dataloader(), embed=True)
    votes = knn_vote(bank, bank_t, query, 5)
    r = model.test_result
    for label in rare:
        j = model.space.index[label]
        assert np.array_equal(r["pred"][:, j], ((votes[:, j] >= 0.4) & (r["pred"][:, 0] == 1)).astype(int))


@pytest.mark.shared_data
def test_toutiao_is_read_in_place_and_split_deterministically():
    from tests.conftest import SHARED
    from textcls.data import DataConfig, TextDataModule

    path = SHARED / "toutiao" / "toutiao_cat_data.dev.txt"
    if not path.is_file():
        pytest.skip("../shared/datasets/toutiao is absent")
    cfg = DataConfig(source="toutiao", task="binary", positive_label="news_car", train_file=str(path), min_freq=1, max_len=48)
    a = TextDataModule(cfg)
    assert (len(a.train), len(a.val), len(a.test)) == (8000, 1000, 1000)
    assert a.train.targets.sum().item() == pytest.approx(958 * 0.8, abs=2)
    b = TextDataModule(DataConfig(**{**cfg.__dict__, "task": "multiclass", "positive_label": None}))
    assert len(b.space.labels) == 15 and [d.text for d in b.test.docs] == [d.text for d in a.test.docs]
