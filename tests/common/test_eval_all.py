from mlflow import MlflowClient

from common import eval_all


def test_trains_when_nothing_ran_then_reuses_the_run(tmp_path, monkeypatch, capsys):
    uri = f"sqlite:///{tmp_path}/m.db"
    monkeypatch.setenv("MLFLOW_ARTIFACT_ROOT", str(tmp_path / "art"))
    monkeypatch.setenv("PROJECT_ROOT", str(tmp_path))  # logs/ of the trained default land in tmp
    args = ["--packages", "toy", "--train-module", "tests.common.{pkg}.train", "--tracking-uri", uri, "--out", str(tmp_path / "r" / "all")]
    assert eval_all.main(args) == 0
    assert "toy: no finished run yet, training the embedded default" in capsys.readouterr().out
    client = MlflowClient(tracking_uri=uri)
    trained = client.search_runs([client.get_experiment_by_name("toy").experiment_id])
    assert len(trained) == 1 and trained[0].info.status == "FINISHED"
    assert f"MLflow run `{trained[0].info.run_id}`" in (tmp_path / "r" / "all.md").read_text()

    assert eval_all.main(args) == 0
    assert "toy: using its latest finished run" in capsys.readouterr().out
    assert len(client.search_runs([client.get_experiment_by_name("toy").experiment_id])) == 1
    assert len(client.search_runs([client.get_experiment_by_name("eval-all").experiment_id])) == 2
    # its experiment keeps its files under the artifact root, not in ./mlruns of the directory it ran in
    assert client.get_experiment_by_name("eval-all").artifact_location == str(tmp_path / "art" / "eval-all")
