"""Bench baselines on the same splits and label spaces as the neural taggers: fastText (the real library)
and TF-IDF + logistic regression (scikit-learn). Both return probabilities ``[n, L]`` in the
:class:`~textcls.data.LabelSpace` column order, so decoding and metrics are shared with the neural models."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from textcls.data import LabelSpace
from textcls.synth import Doc
from textcls.tokenize import tokenize


@dataclass
class FastTextConfig:
    tokenizer: str = "word"
    epoch: int = 25
    lr: float = 0.5
    word_ngrams: int = 2
    dim: int = 100
    min_count: int = 1
    thread: int = 2
    seed: int = 0


class FastTextBaseline:
    """``fasttext.train_supervised`` on ``__label__`` lines; softmax for binary/multiclass, one-vs-all otherwise."""

    def __init__(self, space: LabelSpace, cfg: FastTextConfig | None = None):
        self.space, self.cfg = space, cfg or FastTextConfig()
        self.model = None

    def _line(self, doc: Doc) -> str:
        return " ".join(tokenize(doc.text, self.cfg.tokenizer)).replace("\n", " ")

    def fit(self, docs: Sequence[Doc], targets: np.ndarray) -> FastTextBaseline:
        import fasttext

        multi = self.space.task in ("multilabel", "hierarchical")
        fd, path = tempfile.mkstemp(suffix=".txt", prefix="fasttext_")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                for doc, row in zip(docs, targets, strict=True):
                    if self.space.task == "binary":
                        labels = ["pos" if row[0] else "neg"]
                    else:
                        labels = [str(j) for j in np.flatnonzero(row)] or (["none"] if multi else [])
                    f.write(" ".join(f"__label__{x}" for x in labels) + " " + self._line(doc) + "\n")
            c = self.cfg
            self.model = fasttext.train_supervised(
                input=path, epoch=c.epoch, lr=c.lr, wordNgrams=c.word_ngrams, dim=c.dim, minCount=c.min_count,
                thread=c.thread, seed=c.seed, loss="ova" if multi else "softmax", verbose=0,
            )
        finally:
            os.unlink(path)
        return self

    def predict_proba(self, docs: Sequence[Doc]) -> np.ndarray:
        n_labels = len(self.space.labels)
        out = np.zeros((len(docs), n_labels), dtype=np.float32)
        labels, probs = self.model.predict([self._line(d) for d in docs], k=-1, threshold=0.0)
        for i, (ls, ps) in enumerate(zip(labels, probs, strict=True)):
            for name, p in zip(ls, ps, strict=True):
                name = name.removeprefix("__label__")
                if self.space.task == "binary":
                    if name == "pos":
                        out[i, 0] = p
                elif name.isdigit():
                    out[i, int(name)] = p
        return out


@dataclass
class TfidfConfig:
    analyzer: str = "char"  # char n-grams of the raw text, or "word" (jieba tokens)
    ngram_max: int = 3
    min_df: int = 1
    C: float = 10.0
    max_iter: int = 2000


class TfidfLRBaseline:
    def __init__(self, space: LabelSpace, cfg: TfidfConfig | None = None):
        self.space, self.cfg = space, cfg or TfidfConfig()

    def _vectorizer(self):
        from sklearn.feature_extraction.text import TfidfVectorizer

        c = self.cfg
        if c.analyzer == "char":
            return TfidfVectorizer(analyzer="char", ngram_range=(1, c.ngram_max), min_df=c.min_df, sublinear_tf=True)
        return TfidfVectorizer(
            analyzer=lambda text: tokenize(text, "word"), min_df=c.min_df, sublinear_tf=True
        )

    def fit(self, docs: Sequence[Doc], targets: np.ndarray) -> TfidfLRBaseline:
        from sklearn.linear_model import LogisticRegression
        from sklearn.multiclass import OneVsRestClassifier

        self.vec = self._vectorizer()
        x = self.vec.fit_transform([d.text for d in docs])
        lr = LogisticRegression(C=self.cfg.C, max_iter=self.cfg.max_iter)
        task = self.space.task
        if task == "binary":
            self.clf = lr.fit(x, targets[:, 0].astype(int))
        elif task == "multiclass":
            self.clf = lr.fit(x, targets.argmax(1))
        else:
            self.cols = [j for j in range(targets.shape[1]) if 0 < targets[:, j].sum() < len(targets)]
            self.clf = OneVsRestClassifier(lr).fit(x, targets[:, self.cols].astype(int))
        return self

    def predict_proba(self, docs: Sequence[Doc]) -> np.ndarray:
        x = self.vec.transform([d.text for d in docs])
        task = self.space.task
        out = np.zeros((len(docs), len(self.space.labels)), dtype=np.float32)
        if task == "binary":
            out[:, 0] = self.clf.predict_proba(x)[:, 1]
        elif task == "multiclass":
            out[:, self.clf.classes_] = self.clf.predict_proba(x)
        else:
            out[:, self.cols] = self.clf.predict_proba(x)
        return out
