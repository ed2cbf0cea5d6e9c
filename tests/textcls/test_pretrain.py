"""Domain-adaptive pre-training: masked-LM on the training text, saved as a transformers checkpoint that
``model=bert model.name_or_path=DIR`` fine-tunes."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tests.conftest import run_cli
from tests.textcls.conftest import compose_cfg
from textcls import mlm, pretrain
from textcls.build import build


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dapt")
    cfg = compose_cfg(tmp, "data.synth.n=600", "pretrain.epochs=4", "pretrain.batch_size=16", f"pretrain.out={tmp / 'bert'}", "optim.lr=0.002",
                      "callbacks.progress_bar=null", name="pretrain")
    (tmp / ".bert.tmp").mkdir()
    (tmp / ".bert.tmp" / "stale.bin").write_bytes(b"from an interrupted run")
    val_loss = pretrain.pretrain(cfg)
    return {"cfg": cfg, "dir": tmp / "bert", "val_loss": val_loss}


def test_masked_lm_learns_the_domain_text(pretrained):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(pretrained["dir"], local_files_only=True)
    AutoModelForMaskedLM.from_pretrained(pretrained["dir"], local_files_only=True)
    # an untrained model predicts uniformly at best: ln(vocab) nats per masked token
    assert pretrained["val_loss"] < math.log(len(tok)) - 0.5, (pretrained["val_loss"], len(tok))
    assert not (Path(pretrained["dir"]).parent / ".bert.tmp").exists()
    assert not (Path(pretrained["dir"]) / "stale.bin").exists()  # an interrupted run's leftovers are not shipped


def test_tokenizer_covers_the_training_characters_and_latin_runs():
    tok = mlm.build_tokenizer(["比亚迪海豹上市 SUV售价18万", "小米SU7谍照"])
    ids = tok("比亚迪SU7上市")["input_ids"]
    assert tok.unk_token_id not in ids and ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    assert tok.convert_ids_to_tokens(ids)[1:4] == ["比", "亚", "迪"]


def test_fine_tuning_starts_from_the_pretrained_encoder(pretrained, tmp_path):
    from transformers import AutoModel

    cfg = compose_cfg(tmp_path, "data.synth.n=600", "model=bert", f"model.name_or_path={pretrained['dir']}")
    module, dm = build(cfg)
    saved = AutoModel.from_pretrained(pretrained["dir"], local_files_only=True)
    assert torch.equal(module.net.encoder.embeddings.word_embeddings.weight, saved.embeddings.word_embeddings.weight)
    assert dm.encoder.mode == "pretrained" and dm.encoder.vocab_size == saved.config.vocab_size


def test_an_existing_output_folder_is_refused_in_one_line(pretrained, tmp_path):
    res = run_cli("-m", "textcls.pretrain", "data.synth.n=200", f"pretrain.out={pretrained['dir']}", f"hydra.run.dir={tmp_path}")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1] == f"error: pretrain.out: {pretrained['dir']} exists and is not empty; give a new folder"
