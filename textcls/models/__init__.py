"""Plain ``nn.Module`` text classifiers. Each has ``encode(ids) -> [B, D]`` (for kNN / ensembles) and
``forward(ids) -> logits [B, num_labels]``; ``vocab_size`` and ``num_labels`` come from the data."""

from textcls.models.bert import BertClassifier
from textcls.models.textcnn import TextCNN

__all__ = ["BertClassifier", "TextCNN"]
