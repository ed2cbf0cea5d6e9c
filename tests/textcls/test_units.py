"""Hand-made cases for the pieces: synthetic set, taxonomy, tokenisation, decoding, losses, models, kNN."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from common.errors import ConfigError, DataError
from textcls import decoding, losses, synth
from textcls.data import LabelSpace
from textcls.knn import knn_vote
from textcls.models import BertClassifier, TextCNN
from textcls.taxonomy import GATE, SUBTAG_SHARES, Taxonomy, with_ancestors
from textcls.tokenize import char_tokens, word_tokens
from textcls.vectors import embedding_matrix

CONF = Path(__file__).resolve().parents[2] / "conf" / "textcls" / "model"
CNN = {k: v for k, v in OmegaConf.to_container(OmegaConf.load(CONF / "textcnn.yaml")).items() if k != "_target_"}
BERT = {k: v for k, v in OmegaConf.to_container(OmegaConf.load(CONF / "bert.yaml")).items() if k != "_target_"}


def test_synthetic_set_is_deterministic_with_the_long_tail():
    a, b = synth.generate(600, seed=3), synth.generate(600, seed=3)
    assert a == b and a != synth.generate(600, seed=4)
    docs = synth.generate(12000, seed=0)
    counts = Counter(label for d in docs for label in d.labels)
    assert abs(counts["其他"] / len(docs) - 0.832) < 0.015
    assert abs(counts[f"{GATE}--新车解析"] / len(docs) - 0.148) < 0.015
    # every tag at >= 0.4% share has some tens of positives in the 80% training part
    for tag, share in SUBTAG_SHARES.items():
        if share >= 0.004:
            assert counts[f"{GATE}--{tag}"] * 0.8 >= 30, tag
    # co-occurrence: positives carry ~2 tags on average
    pos = [d for d in docs if d.labels != ("其他",)]
    assert 1.7 < np.mean([len(d.labels) for d in pos]) < 2.5


def test_taxonomy_roundtrip_and_hierarchy(tmp_path):
    tax = Taxonomy.car_news()
    assert tax.labels[0] == GATE and len(tax.labels) == 13
    tax.write(tmp_path / "tax.txt")
    again = Taxonomy.read(tmp_path / "tax.txt")
    assert again.labels == tax.labels and again.parent_index() == [-1] + [0] * 12
    assert with_ancestors(["a--b--c", "a--d"]) == ["a", "a--b", "a--b--c", "a--d"]
    with pytest.raises(ValueError, match="'新车资讯--试驾' is not in the taxonomy"):
        tax.check(["新车资讯--试驾"])
    with pytest.raises(DataError, match="no such taxonomy file"):
        Taxonomy.read(tmp_path / "none.txt")


def test_label_space_encodings():
    h = LabelSpace("hierarchical", ["g", "g--a", "g--b"], [-1, 0, 0])
    assert h.encode(["g--b"]).tolist() == [1, 0, 1]
    assert h.encode(["其他"]).tolist() == [0, 0, 0]
    b = LabelSpace("binary", ["g--a"])
    assert b.encode(["g--a", "g--b"]).tolist() == [1] and b.encode(["g--b"]).tolist() == [0]
    m = LabelSpace("multiclass", ["x", "y"])
    with pytest.raises(ValueError, match="exactly one label"):
        m.encode(["x", "y"])


def test_tokenisers():
    assert char_tokens("特斯拉Model 3谍照") == ["特", "斯", "拉", "model", "3", "谍", "照"]
    words = word_tokens("比亚迪汉正式上市")
    assert "上市" in words and "".join(words) == "比亚迪汉正式上市"


def test_decode_thresholds_topk_and_hierarchy():
    probs = np.array([[0.9, 0.8, 0.6, 0.2], [0.3, 0.9, 0.9, 0.1], [0.7, 0.1, 0.2, 0.35]])
    parents = [-1, 0, 0, 0]
    # the gate decides: row 1 has confident sub-tags but a negative gate -> nothing
    assert decoding.decode(probs, "hierarchical", 0.5, parents=parents).tolist() == [[1, 1, 1, 0], [0, 0, 0, 0], [1, 0, 0, 0]]
    # per-label thresholds
    assert decoding.decode(probs, "hierarchical", [0.5, 0.5, 0.5, 0.3], parents=parents)[2].tolist() == [1, 0, 0, 1]
    # top-1 among the sub-tags
    assert decoding.decode(probs, "hierarchical", 0.5, top_k=1, parents=parents)[0].tolist() == [1, 1, 0, 0]
    assert decoding.decode(probs, "multiclass").tolist() == [[1, 0, 0, 0], [0, 1, 0, 0], [1, 0, 0, 0]]


def test_tune_thresholds_finds_the_separating_cut():
    probs = np.array([[0.1], [0.2], [0.25], [0.3], [0.9]])
    targets = np.array([[0], [0], [1], [1], [1]])
    thr = decoding.tune_thresholds(probs, targets)
    assert 0.2 < thr[0] <= 0.25
    assert decoding.tune_thresholds(probs, np.zeros_like(targets), default=0.5)[0] == 0.5


def test_pos_weight_and_focal():
    w = losses.auto_pos_weight([10, 1, 0, 90], n=100, max_weight=30)
    assert w.tolist() == pytest.approx([9.0, 30.0, 1.0, 1.0])
    with pytest.raises(ConfigError, match="module.pos_weight: 2 values for 3 labels"):
        losses.resolve_pos_weight([1, 2], [1, 1, 1], 10, 30)
    logits, target = torch.tensor([[2.0, -1.0]]), torch.tensor([[1.0, 0.0]])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    assert losses.focal_loss(logits, target, gamma=0.0).item() == pytest.approx(bce.item())
    assert losses.focal_loss(logits, target, gamma=2.0).item() < bce.item()


def test_textcnn_shapes_topk_and_dropout_placement():
    torch.manual_seed(0)
    m = TextCNN(vocab_size=50, num_labels=5, **{**CNN, "embedding_dim": 8, "num_kernels": 4, "top_k_max_pooling": 2})
    ids = torch.randint(2, 50, (3, 4))  # shorter than the widest kernel
    assert m.encode(ids).shape == (3, 4 * 3 * 2) and m(ids).shape == (3, 5)
    assert isinstance(list(m.children())[-1], torch.nn.Linear)  # logits come straight from the classifier
    m.eval()
    assert torch.equal(m(ids), m(ids))


def test_tiny_bert_forward_ignores_padding():
    torch.manual_seed(0)
    m = BertClassifier(vocab_size=30, num_labels=3, **{**BERT, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                                                        "intermediate_size": 32}).eval()
    ids = torch.tensor([[5, 6, 7, 0, 0]])
    assert m(ids).shape == (1, 3)
    assert torch.allclose(m(ids), m(ids[:, :3]), atol=1e-5)


def test_knn_vote_counts_neighbours():
    bank = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=np.float32)
    targets = np.array([[1, 0], [1, 0], [0, 1], [0, 1]])
    votes = knn_vote(bank, targets, np.array([[1, 0.05]], dtype=np.float32), k=2)
    assert votes.tolist() == [[1.0, 0.0]]


def test_word2vec_vectors(tmp_path):
    f = tmp_path / "vec.txt"
    f.write_text("2 3\n上市 1 2 3\n谍照 4 5 6\n", encoding="utf-8")
    m = embedding_matrix(f, ["<pad>", "<unk>", "上市", "其它"], 3)
    assert m[2].tolist() == [1, 2, 3] and m[0].abs().sum() == 0
    with pytest.raises(ConfigError, match="model.embedding_dim: 4, but .* 3-dimensional"):
        embedding_matrix(f, ["<pad>"], 4)
    (tmp_path / "bad.txt").write_text("上市 1 2 3\n谍照 4 5\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.txt:2: expected 3 values, got 2"):
        embedding_matrix(tmp_path / "bad.txt", ["<pad>"], 3)


def test_textcnn_features_do_not_depend_on_batch_padding():
    torch.manual_seed(0)
    m = TextCNN(vocab_size=50, num_labels=3, **{**CNN, "embedding_dim": 8, "num_kernels": 4, "top_k_max_pooling": 2}).eval()
    short = torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]])
    padded = torch.cat([short, torch.zeros(1, 30, dtype=torch.long)], dim=1)
    assert torch.allclose(m(short), m(padded), atol=1e-6)
