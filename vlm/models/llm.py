"""The causal LLM and its tokenizer: a real HF checkpoint by path, or the embedded tiny Qwen2.

The embedded default is built like a real one, only small: a byte-level BPE tokenizer trained with HF
``tokenizers`` on the synthetic caption corpus (wrapped as ``PreTrainedTokenizerFast`` with a ChatML chat
template), and a tiny ``Qwen2ForCausalLM`` pre-trained on chat-formatted text (prompts, captions, product
descriptions, some with the product facts given in the user turn so the LM learns to use its context).
Both are cached under ``<cache_dir>/vlm/llm-<hash>/`` by ``save_pretrained``; the hash covers every setting
and the corpus, and training is seeded, so a rebuilt cache holds the same weights.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from common.cache import build_once, content_hash
from common.errors import ConfigError
from vlm.chat import IMAGE_TOKEN

log = logging.getLogger(__name__)

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", IMAGE_TOKEN]
PRETRAIN_VERSION = 2


def train_tokenizer(corpus: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus + ["user\n", "assistant\n", "system\n"], trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None,
        additional_special_tokens=["<|im_start|>", IMAGE_TOKEN],
    )
    fast.chat_template = CHATML
    return fast


def _pretrain_texts(tokenizer, corpus_rows: list[dict], seed: int) -> list[str]:
    """Chat-formatted texts: plain prompts -> captions, and prompts that state the facts -> captions."""
    import random

    rnd = random.Random(seed)
    texts = []
    for row in corpus_rows:
        user = row["prompt"]
        if rnd.random() < 0.8 and row.get("facts"):
            user = f"{row['facts']}\n{user}"
        msgs = [{"role": "user", "content": user}, {"role": "assistant", "content": row["caption"]}]
        texts.append(tokenizer.apply_chat_template(msgs, tokenize=False))
    return texts


def pretrain(model, tokenizer, texts: list[str], steps: int, lr: float, batch_size: int, seed: int) -> list[float]:
    """Next-token pre-training of the tiny LM on ``texts`` (CPU-minutes at most); returns the loss curve."""
    from tqdm.auto import tqdm

    g = torch.Generator().manual_seed(seed)
    enc = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warm = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * max(0.05, 1 - s / max(1, steps))
    )
    model.train()
    losses = []
    pad = tokenizer.pad_token_id
    for _ in tqdm(range(steps), desc="pre-training the tiny LLM", leave=False, mininterval=2.0):
        idx = torch.randint(len(enc), (batch_size,), generator=g).tolist()
        n = max(len(enc[i]) for i in idx)
        ids = torch.full((batch_size, n), pad)
        mask = torch.zeros((batch_size, n), dtype=torch.long)
        for r, i in enumerate(idx):
            ids[r, : len(enc[i])] = torch.tensor(enc[i])
            mask[r, : len(enc[i])] = 1
        labels = ids.masked_fill(mask == 0, -100)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


def tiny_config(cfg, vocab_size: int, tokenizer):
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=512, tie_word_embeddings=True, rope_theta=10000.0,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
    )


def build_tiny(cfg, cache_dir: str | Path, corpus: list[str], corpus_rows: list[dict], seed: int) -> Path:
    """Train (or find) the cached tiny tokenizer + pre-trained LM; returns its ``save_pretrained`` dir."""
    from transformers import Qwen2ForCausalLM

    spec = {k: cfg[k] for k in ("hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads",
                                 "vocab_size", "pretrain_steps", "pretrain_lr", "pretrain_batch_size")}
    blob = json.dumps({"spec": spec, "seed": seed, "corpus": corpus, "rows": corpus_rows,
                       "version": PRETRAIN_VERSION}, sort_keys=True)
    root = Path(cache_dir) / "vlm" / f"llm-{content_hash(blob)}"
    losses: list[float] = []

    def train_into(tmp: Path) -> None:
        torch.manual_seed(seed)
        tokenizer = train_tokenizer(corpus, cfg.vocab_size)
        model = Qwen2ForCausalLM(tiny_config(cfg, len(tokenizer), tokenizer))
        texts = _pretrain_texts(tokenizer, corpus_rows, seed)
        losses.extend(pretrain(model, tokenizer, texts, cfg.pretrain_steps, cfg.pretrain_lr, cfg.pretrain_batch_size, seed))
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "pretrain.json").write_text(json.dumps({"first_loss": losses[0], "last_loss": losses[-1], **spec}))

    build_once(root, train_into, f"the embedded tiny LLM (tokenizer + {cfg.pretrain_steps} pre-training steps)")
    if not losses:  # found in the cache
        return root
    log.info("tiny LLM pre-trained: loss %.3f -> %.3f", losses[0], losses[-1])
    return root


def load(path: str | Path, trust_remote_code: bool = False, dtype="auto"):
    """``(model, tokenizer)`` from a local HF dir; the image placeholder is added as a special token if new.

    ``dtype`` is what ``from_pretrained`` takes (``"auto"``: the checkpoint's own); any failure to load is one
    ``model.llm.name_or_path: ...`` error."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"model.llm.name_or_path: no such directory {path} (no hub downloads here)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=trust_remote_code, dtype=dtype)
    except Exception as e:  # OSError, ValueError, ImportError of a remote file, ...
        first = str(e).splitlines()[0] if str(e) else ""
        raise ConfigError(f"model.llm.name_or_path: cannot load {path}: {type(e).__name__}: {first}") from None
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(f"model.llm.name_or_path: the tokenizer in {path} has no chat template")
    return model, tokenizer
