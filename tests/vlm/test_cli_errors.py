"""Start-up mistakes on vlm's command line: one line, exit 2, nothing left behind."""

from tests.conftest import run_cli


def test_typo_without_plus_gets_did_you_mean_and_no_run_dir(tmp_path):
    res = run_cli("-m", "vlm.train", "trainer.max_epoch=3", f"paths.log_dir={tmp_path}")
    assert res.returncode == 2, res.stderr
    assert [x for x in res.stderr.splitlines() if x.strip()] == [
        "error: trainer.max_epoch: not a parameter of lightning.pytorch.Trainer (did you mean 'max_epochs'?)"]
    assert not list(tmp_path.rglob("*"))
