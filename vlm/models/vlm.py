"""The captioner: vision tower -> projector -> image tokens spliced into a causal LLM's input embeddings.

Plain ``nn.Module`` (no Lightning). ``forward`` gives the next-token loss on the labelled (assistant)
positions; ``generate`` runs HF ``generate`` on the spliced embeddings (greedy / sampling / beam, with or
without the KV cache).
"""

from __future__ import annotations

import torch
from torch import nn

from common.errors import ConfigError
from vlm.chat import IMAGE_TOKEN
from vlm.models.projector import build_projector
from vlm.models.vision import VisionTower


class VLM(nn.Module):
    def __init__(self, vision: VisionTower, llm: nn.Module, tokenizer, projector: str = "mlp2x_gelu"):
        super().__init__()
        self.vision = vision
        self.llm = llm
        self.tokenizer = tokenizer
        emb = llm.get_input_embeddings()
        self.projector = build_projector(projector, vision.out_dim, emb.embedding_dim, emb.num_embeddings)
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)

    @property
    def num_image_tokens(self) -> int:
        return self.vision.num_tokens

    def image_embeds(self, pixels: torch.Tensor) -> torch.Tensor:
        """``[T, num_tokens, llm width]`` for ``T`` images or tiles; the tower's output (bf16 when the tower is
        kept in bf16) is cast to the projector's dtype explicitly."""
        feats = self.vision(pixels)
        feats = feats.to(next(self.projector.parameters()).dtype)
        if getattr(self.projector, "uses_vocab", False):
            return self.projector(feats, self.llm.get_input_embeddings().weight)
        return self.projector(feats)

    def embed(self, input_ids: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        emb_layer = self.llm.get_input_embeddings()
        mask = input_ids == self.image_token_id
        embeds = emb_layer(input_ids)
        feats = self.image_embeds(pixels).to(embeds.dtype)
        if int(mask.sum()) != feats.shape[0] * feats.shape[1]:
            raise ValueError(
                f"{int(mask.sum())} image positions in the batch but {feats.shape[0]} images x {feats.shape[1]} tokens"
            )
        embeds = embeds.masked_scatter(mask.unsqueeze(-1), feats.reshape(-1, feats.shape[-1]))
        return embeds

    def forward(self, input_ids, attention_mask, labels, pixels):
        embeds = self.embed(input_ids, pixels)
        return self.llm(inputs_embeds=embeds, attention_mask=attention_mask, labels=labels, use_cache=False).loss

    @torch.no_grad()
    @torch.no_grad()
    def _greedy_without_cache(self, embeds: torch.Tensor, mask: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        """Greedy decoding that runs the whole sequence again at every step: what "without a KV cache" means.

        transformers' ``generate(inputs_embeds=..., use_cache=False)`` keeps a cache anyway (it has no ids to
        embed the prompt again from: every step after the first gets one token), so the uncached path is spelled
        out here. It gives the cached path's tokens (tested), and its cost is the real price of no cache."""
        eos, pad = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        min_new = int(self.llm.generation_config.min_new_tokens or 0)
        embed_tokens = self.llm.get_input_embeddings()
        done = torch.zeros(len(embeds), dtype=torch.bool, device=embeds.device)
        out = []
        for step in range(max_new_tokens):
            position_ids = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding, as generate() positions it
            logits = self.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids,
                              use_cache=False).logits[:, -1].float()
            if step < min_new and eos is not None:
                logits[:, eos] = float("-inf")
            tok = torch.where(done, torch.full_like(done, pad, dtype=torch.long), logits.argmax(-1))
            out.append(tok)
            done |= tok == eos
            if done.all():
                break
            embeds = torch.cat([embeds, embed_tokens(tok)[:, None].to(embeds.dtype)], 1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
        return torch.stack(out, 1)

    def generate(
        self,
        pixels: torch.Tensor,
        prompts: list[list[int]],
        max_new_tokens: int = 32,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        num_beams: int = 1,
        use_cache: bool = True,
        seed: int | None = None,
    ) -> list[list[int]]:
        """New token ids per prompt (left-padded batch; stops at the tokenizer's EOS)."""
        device = pixels.device
        pad = self.tokenizer.pad_token_id
        n = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), n), pad, dtype=torch.long, device=device)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(prompts):
            ids[i, n - len(p):] = torch.tensor(p, device=device)
            mask[i, n - len(p):] = 1
        embeds = self.embed(ids, pixels)
        if seed is not None:
            torch.manual_seed(seed)
        if use_cache:
            kwargs = dict(do_sample=do_sample, num_beams=num_beams)
            if do_sample:
                kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
            out = self.llm.generate(
                inputs_embeds=embeds, attention_mask=mask, max_new_tokens=max_new_tokens, use_cache=True,
                eos_token_id=self.tokenizer.eos_token_id, pad_token_id=pad, **kwargs,
            )
        else:
            if do_sample or num_beams != 1:
                raise ConfigError("use_cache=false: only greedy decoding (no sampling, num_beams=1) runs without the cache")
            out = self._greedy_without_cache(embeds, mask, max_new_tokens)
        # With inputs_embeds (and no input_ids) HF returns only the new tokens.
        result = []
        for row in out.tolist():
            row = row[:]
            if self.tokenizer.eos_token_id in row:
                row = row[: row.index(self.tokenizer.eos_token_id)]
            result.append([t for t in row if t != pad])
        return result
