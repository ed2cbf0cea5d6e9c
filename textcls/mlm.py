"""Domain-adaptive pre-training: masked-LM training of the BERT-class encoder on the training text, saved as a
plain transformers checkpoint (``BertForMaskedLM`` + its tokenizer) that ``model=bert model.name_or_path=DIR``
then fine-tunes, exactly as it would a real ``bert-base-chinese``.

With no hub, the encoder starts from a tiny random ``BertConfig`` (the sizes of ``conf/textcls/model/bert.yaml``)
and its WordPiece vocabulary is built from the training text: every character of it (CJK text is split into
characters by BERT's own pre-tokeniser), the Latin / digit runs the char tokeniser keeps whole, and their
``##`` continuations. Given ``init_from=DIR`` (a real checkpoint), its model and tokenizer are trained further
instead. Masking is transformers' ``DataCollatorForLanguageModeling`` (15 %: 80 % [MASK], 10 % random, 10 % kept).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import lightning.pytorch as pl
import torch

from common import optim
from common.errors import ConfigError
from textcls.schemas import PretrainConfig  # noqa: F401  (re-exported)
from textcls.tokenize import char_tokens

log = logging.getLogger(__name__)
SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def build_tokenizer(texts: Sequence[str], min_freq: int = 1):
    """A ``BertTokenizer`` whose WordPiece vocabulary covers ``texts`` (see the module docstring)."""
    from transformers import BertTokenizer

    counts = Counter(t for text in texts for t in char_tokens(text))
    tokens = sorted(t for t, c in counts.items() if c >= min_freq)
    latin = sorted({t for t in tokens if t.isascii() and t.isalnum()} | set("abcdefghijklmnopqrstuvwxyz0123456789"))
    vocab = list(SPECIALS) + [t for t in tokens if t not in SPECIALS] + [f"##{t}" for t in latin]
    vocab = list(dict.fromkeys(vocab))
    return BertTokenizer(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=True, tokenize_chinese_chars=True)


def tiny_bert(vocab_size: int, model_cfg: dict, pad_id: int):
    from transformers import BertConfig, BertForMaskedLM

    keys = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "max_position_embeddings")
    config = BertConfig(
        vocab_size=vocab_size, pad_token_id=pad_id, hidden_dropout_prob=model_cfg["dropout"],
        attention_probs_dropout_prob=model_cfg["dropout"], **{k: model_cfg[k] for k in keys},
    )
    return BertForMaskedLM(config)


class MaskedLM(pl.LightningModule):
    def __init__(self, model, optim_cfg: dict, scheduler_cfg: dict | None):
        super().__init__()
        self.model, self.optim_cfg, self.scheduler_cfg = model, optim_cfg, scheduler_cfg

    def training_step(self, batch, batch_idx):
        loss = self.model(**batch).loss
        self.log("train/mlm_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(batch["input_ids"]))
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val/mlm_loss", self.model(**batch).loss, prog_bar=True, batch_size=len(batch["input_ids"]))

    def configure_optimizers(self):
        return optim.configure(self.model.parameters(), self.optim_cfg, self.scheduler_cfg, self.trainer.estimated_stepping_batches)


def _loader(tokenizer, texts: Sequence[str], max_len: int, batch_size: int, mlm_probability: float, shuffle: bool, seed: int):
    from transformers import DataCollatorForLanguageModeling

    enc = tokenizer(list(texts), truncation=True, max_length=max_len)
    rows = [{"input_ids": ids} for ids in enc["input_ids"]]
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=mlm_probability, seed=seed)
    return torch.utils.data.DataLoader(
        rows, batch_size=batch_size, shuffle=shuffle, collate_fn=collator, generator=torch.Generator().manual_seed(seed)
    )


def pretrain(
    train_texts: Sequence[str], val_texts: Sequence[str], cfg: PretrainConfig, model_cfg: dict, max_len: int,
    optim_cfg: dict, scheduler_cfg: dict | None, trainer_kwargs: dict | None = None, seed: int = 42,
) -> dict[str, float]:
    """Masked-LM training on ``train_texts`` (``val_texts`` only measure it); writes model + tokenizer to
    ``cfg.out`` and returns the final train / val MLM loss."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    pl.seed_everything(seed, workers=True)
    if cfg.init_from:
        try:
            tokenizer = AutoTokenizer.from_pretrained(cfg.init_from, local_files_only=True)
            model = AutoModelForMaskedLM.from_pretrained(cfg.init_from, local_files_only=True)
        except (OSError, ValueError) as e:
            raise ConfigError(f"pretrain.init_from: cannot load {cfg.init_from!r} ({e})") from None
    else:
        tokenizer = build_tokenizer(train_texts, cfg.min_freq)
        model = tiny_bert(len(tokenizer), model_cfg, tokenizer.pad_token_id)
    train = _loader(tokenizer, train_texts, max_len, cfg.batch_size, cfg.mlm_probability, True, seed)
    val = _loader(tokenizer, val_texts, max_len, cfg.batch_size, cfg.mlm_probability, False, seed)
    module = MaskedLM(model, optim_cfg, scheduler_cfg)
    trainer = pl.Trainer(
        max_epochs=cfg.epochs, logger=False, enable_checkpointing=False, enable_model_summary=False,
        **(trainer_kwargs or {}),
    )
    trainer.fit(module, train, val)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.endswith("mlm_loss")}
    log.info("masked-LM pre-training: %s; saved to %s", metrics, out)
    return metrics
