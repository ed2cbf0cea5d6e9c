"""A BERT-class encoder + linear head via transformers.

By default a tiny ``BertConfig`` trained from scratch on the package's own char/word vocabulary (no hub);
``name_or_path=/path/to/chinese-bert`` loads a real checkpoint (its tokenizer is then used for the data).
"""

from __future__ import annotations

import torch
from torch import nn

from common.errors import ConfigError


class BertClassifier(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        num_labels: int,
        *,  # the sizes and settings: conf/textcls/model/bert.yaml says them, once
        name_or_path: str | None,
        hidden_size: int,
        num_hidden_layers: int,
        num_attention_heads: int,
        intermediate_size: int,
        max_position_embeddings: int,
        dropout: float,
        pooling: str,
        trust_remote_code: bool,
        pad_id: int = 0,
    ):
        super().__init__()
        from transformers import AutoModel, BertConfig, BertModel

        if pooling not in ("mean", "cls"):
            raise ConfigError(f"model.pooling: expected 'mean' or 'cls', got {pooling!r}")
        self.pooling, self.pad_id = pooling, pad_id
        if name_or_path:
            try:
                self.encoder = AutoModel.from_pretrained(
                    name_or_path, local_files_only=True, trust_remote_code=trust_remote_code
                )
            except (OSError, ValueError) as e:
                raise ConfigError(f"model.name_or_path: cannot load {name_or_path!r} ({e})") from None
        else:
            config = BertConfig(
                vocab_size=vocab_size,
                hidden_size=hidden_size,
                num_hidden_layers=num_hidden_layers,
                num_attention_heads=num_attention_heads,
                intermediate_size=intermediate_size,
                max_position_embeddings=max_position_embeddings,
                hidden_dropout_prob=dropout,
                attention_probs_dropout_prob=dropout,
                pad_token_id=pad_id,
            )
            self.encoder = BertModel(config, add_pooling_layer=False)
        self.out_dim = self.encoder.config.hidden_size
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(self.out_dim, num_labels)

    def encode(self, ids: torch.Tensor) -> torch.Tensor:
        mask = (ids != self.pad_id).long()
        hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.encode(ids)))
