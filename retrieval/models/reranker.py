"""Cross-encoder reranker: a transformers sequence-classification model scoring (left, right) text pairs."""

from __future__ import annotations

import torch
from torch import nn

from common.errors import ConfigError
from retrieval.models.text import minilm_path


class CrossEncoder(nn.Module):
    def __init__(self, name_or_path: str | None = "minilm", tokenizer: str | None = None, max_length: int = 64,
                 hidden_size: int = 96, num_layers: int = 2, num_heads: int = 4, trust_remote_code: bool = False):
        super().__init__()
        from transformers import (
            AutoModelForSequenceClassification,
            AutoTokenizer,
            BertConfig,
            BertForSequenceClassification,
        )


        if name_or_path == "minilm":
            name_or_path = minilm_path()
        tok = tokenizer or name_or_path or minilm_path()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(tok, trust_remote_code=trust_remote_code)
            if name_or_path:
                self.model = AutoModelForSequenceClassification.from_pretrained(
                    name_or_path, num_labels=1, trust_remote_code=trust_remote_code)
            else:
                cfg = BertConfig(vocab_size=len(self.tokenizer), hidden_size=hidden_size, num_hidden_layers=num_layers,
                                 num_attention_heads=num_heads, intermediate_size=2 * hidden_size, num_labels=1)
                self.model = BertForSequenceClassification(cfg)
        except OSError as e:
            raise ConfigError(f"reranker.name_or_path: cannot load {name_or_path or tok} ({e})") from None
        self.max_length = max_length

    def forward(self, left: list[str], right: list[str]) -> torch.Tensor:
        dev = next(self.parameters()).device
        batch = self.tokenizer(list(left), list(right), padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt").to(dev)
        return self.model(**batch).logits.squeeze(-1)
