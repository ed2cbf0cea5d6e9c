from mlflow import MlflowClient

from common import report, run


def test_report_has_one_row_per_run_with_differing_overrides(toy_cfg, mlflow_uri, monkeypatch):

    lrs = ["0.01", "0.1"]
    for lr in lrs:
        cfg = toy_cfg(
            f"module.lr={lr}", "logger.mlflow.experiment_name=toy_report", "trainer.max_epochs=1",
            "report_metrics=[val/loss,test/loss]",
        )
        monkeypatch.setattr(run, "_hydra_overrides", lambda lr=lr: [f"module.lr={lr}", "trainer.max_epochs=1"])
        run.train(cfg)
    table = report.runs_table(mlflow_uri, "toy_report", metrics=["test/loss"])
    assert table.columns == ["run", "started", "status", "module.lr", "trainer.max_epochs", "test/loss"]
    assert [row[3] for row in table.rows] == lrs
    md = table.markdown().splitlines()
    assert len(md) == 2 + len(lrs) and md[0].startswith("| run | started | status | module.lr")
    exp = MlflowClient(tracking_uri=mlflow_uri).get_experiment_by_name("toy_report")
    losses = {r.data.params["module.lr"]: r.data.metrics["test/loss"] for r in MlflowClient(tracking_uri=mlflow_uri).search_runs([exp.experiment_id])}
    assert [row[5] for row in table.rows] == [f"{losses[lr]:.4f}" for lr in lrs]
    assert table.csv().splitlines()[0] == "run,started,status,module.lr,trainer.max_epochs,test/loss"
    # without --metrics the columns are the package's report_metrics, in its order
    assert report.runs_table(mlflow_uri, "toy_report").columns[-2:] == ["val/loss", "test/loss"]


def test_report_cli_unknown_experiment(mlflow_uri, capsys):
    assert report.main(["--tracking-uri", mlflow_uri, "--experiment", "nope"]) == 2
    assert capsys.readouterr().err.strip() == f"error: no MLflow experiment named 'nope' in {mlflow_uri}"
