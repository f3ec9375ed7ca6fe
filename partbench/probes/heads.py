"""Classification heads trained on frozen, cached features: linear (cls token) and attentive (tokens).

Both follow the study's `patch_lincls.py` (which follows CAE's attentive probing):
- `LinearHead`: one `nn.Linear(D, C)` on the final-normed cls token, weights N(0, 0.01), zero bias.
- `AttentiveHead`: a learned query token (trunc-normal, std 0.02) attends once to all output tokens
  (cls included): LayerNorm (eps 1e-6) on the query, key and value inputs; cross-attention with
  `num_heads` heads, biases on q and v (none on k, as BEiT/CAE's `qkv_bias`), output projection;
  no MLP and no residual; then `BatchNorm1d(affine=False)` and the same linear classifier.
  Study quirk: the study called that batch norm with `is_train=True` even at evaluation, so it
  normalises with the statistics of the evaluated batch (`bn_batch_stats_at_eval=True`);
  the clean protocol uses the running statistics at evaluation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def default_num_heads(embed_dim: int) -> int:
    """Heads of 64 channels (12 for ViT-B's 768); for tiny dims the largest divisor <= dim // 64, or 1."""
    heads = max(1, embed_dim // 64)
    while embed_dim % heads:
        heads -= 1
    return heads


def _classifier(embed_dim: int, num_classes: int) -> nn.Linear:
    fc = nn.Linear(embed_dim, num_classes)
    nn.init.normal_(fc.weight, mean=0.0, std=0.01)
    nn.init.zeros_(fc.bias)
    return fc


class LinearHead(nn.Module):
    """Logits from the cls token [B, D]."""

    def __init__(self, embed_dim: int, num_classes: int) -> None:
        super().__init__()
        self.fc = _classifier(embed_dim, num_classes)

    def forward(self, cls_token: torch.Tensor) -> torch.Tensor:
        return self.fc(cls_token)


class AttentiveHead(nn.Module):
    """Logits from all output tokens [B, T, D] through one learned-query cross-attention."""

    def __init__(
        self,
        embed_dim: int,
        num_classes: int,
        num_heads: int | None = None,
        bn_batch_stats_at_eval: bool = True,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads or default_num_heads(embed_dim)
        if embed_dim % self.num_heads:
            raise ValueError(f"attentive head: {self.num_heads} heads do not divide embed_dim {embed_dim}")
        self.bn_batch_stats_at_eval = bn_batch_stats_at_eval
        self.query = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.norm_q = nn.LayerNorm(embed_dim, eps=1e-6)
        self.norm_k = nn.LayerNorm(embed_dim, eps=1e-6)
        self.norm_v = nn.LayerNorm(embed_dim, eps=1e-6)
        self.q = nn.Linear(embed_dim, embed_dim, bias=True)
        self.k = nn.Linear(embed_dim, embed_dim, bias=False)
        self.v = nn.Linear(embed_dim, embed_dim, bias=True)
        self.proj = nn.Linear(embed_dim, embed_dim)
        self.bn = nn.BatchNorm1d(embed_dim, affine=False)
        self.fc = _classifier(embed_dim, num_classes)
        nn.init.trunc_normal_(self.query, std=0.02)
        for lin in (self.q, self.k, self.v, self.proj):
            nn.init.trunc_normal_(lin.weight, std=0.02)
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """The attended query [B, D] (before batch norm)."""
        b, _, d = tokens.shape
        h = self.num_heads
        q = self.q(self.norm_q(self.query)).expand(b, -1, -1)  # the query is the same for every item
        k = self.k(self.norm_k(tokens))
        v = self.v(self.norm_v(tokens))
        q, k, v = (x.reshape(b, -1, h, d // h).transpose(1, 2) for x in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(head_dim), as the study
        return self.proj(out.transpose(1, 2).reshape(b, d))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.pool(tokens)
        if not self.training and self.bn_batch_stats_at_eval:
            # study quirk: normalise with this batch's statistics (running stats still tracked,
            # as the study's LP_BatchNorm did, though they are never used)
            x = F.batch_norm(
                x, self.bn.running_mean, self.bn.running_var, None, None, True, self.bn.momentum, self.bn.eps
            )
        else:
            x = self.bn(x)
        return self.fc(x)
