"""TextCNN (Kim 2014) as the team configures it in NeuralClassifier: kernel sizes 7/8/9, 128 kernels each,
top-k max pooling over time, dropout before the classifier (never on the logits)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class TextCNN(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        num_labels: int,
        *,  # the sizes and rates: conf/textcls/model/textcnn.yaml says them, once
        embedding_dim: int,
        kernel_sizes: Sequence[int],
        num_kernels: int,
        top_k_max_pooling: int,
        hidden_dim: int,
        dropout: float,
        embedding_dropout: float,
        freeze_embedding: bool,
        embedding_weights: torch.Tensor | None = None,
        pad_id: int = 0,
    ):
        super().__init__()
        self.kernel_sizes, self.top_k, self.pad_id = list(kernel_sizes), top_k_max_pooling, pad_id
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=pad_id)
        if embedding_weights is not None:
            if tuple(embedding_weights.shape) != (vocab_size, embedding_dim):
                raise ValueError(f"embedding_weights {tuple(embedding_weights.shape)} != ({vocab_size}, {embedding_dim})")
            with torch.no_grad():
                self.embedding.weight.copy_(embedding_weights)
        self.embedding.weight.requires_grad_(not freeze_embedding)
        self.embedding_dropout = nn.Dropout(embedding_dropout)
        self.convs = nn.ModuleList(nn.Conv1d(embedding_dim, num_kernels, k) for k in self.kernel_sizes)
        self.out_dim = num_kernels * len(self.kernel_sizes) * top_k_max_pooling
        self.hidden = nn.Sequential(nn.Linear(self.out_dim, hidden_dim), nn.ReLU()) if hidden_dim else nn.Identity()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_dim or self.out_dim, num_labels)

    def encode(self, ids: torch.Tensor) -> torch.Tensor:
        need = max(self.kernel_sizes) + self.top_k - 1
        if ids.size(1) < need:  # short headlines: pad so every kernel fits top_k times
            ids = F.pad(ids, (0, need - ids.size(1)), value=self.pad_id)
        lengths = (ids != self.pad_id).sum(1, keepdim=True)  # [B, 1]
        x = self.embedding_dropout(self.embedding(ids)).transpose(1, 2)  # [B, E, T]
        pooled = []
        for k, conv in zip(self.kernel_sizes, self.convs, strict=True):
            h = F.relu(conv(x))  # [B, C, T - k + 1]
            # windows that start past the text's last full window see only padding: leave them out, so a
            # text's features do not depend on how long the other texts in its batch are
            start = torch.arange(h.size(2), device=ids.device)[None, :]
            valid = start <= (lengths - k).clamp_min(0)
            h = h.masked_fill(~valid[:, None, :], float("-inf"))
            pooled.append(h.topk(self.top_k, dim=2).values.clamp_min(0.0).flatten(1))
        return self.hidden(torch.cat(pooled, dim=1))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.encode(ids)))
