"""Contrastive score of paper Eq. (1): log-probability that a query picks its positive key.

    s(x) = log exp(sim(z, k+)/tau) / (exp(sim(z, k+)/tau) + sum_n exp(sim(z, k_n-)/tau))

with cosine similarity. Keys are treated as constants (detached): only ``z`` carries gradient.
The positive appears once in the numerator and once in the denominator; the query itself is never
counted among its negatives (the authors' code sums the numerator over the batch and keeps
self-pairs in the denominator; the paper does not).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def contrastive_score(z: Tensor, key: Tensor, negatives: Tensor, temperature: float,
                      negative_mask: Tensor | None = None) -> Tensor:
    """Eq. (1) per query.

    z: (B,D) queries (may require grad); key: (B,D) positive key of each query;
    negatives: (N,D) shared by all queries, or (B,N,D) one set per query;
    negative_mask: optional (B,N) bool, True where negative n counts for query b (for a shared
    bank that holds the query's own entries). Returns (B,) log-probabilities of the positives.

    Raises:
        ValueError: ``temperature <= 0``, or shapes that do not fit the ones above.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if z.dim() != 2 or key.shape != z.shape:
        raise ValueError(f"z and key must both be (B,D); got {tuple(z.shape)} and {tuple(key.shape)}")
    z = F.normalize(z, dim=-1)
    key = F.normalize(key.detach(), dim=-1)
    negatives = F.normalize(negatives.detach(), dim=-1)
    positive_logit = (z * key).sum(-1, keepdim=True) / temperature  # (B,1)
    if negatives.dim() == 2:
        negative_logits = z @ negatives.T / temperature  # (B,N)
    elif negatives.dim() == 3 and negatives.shape[0] == z.shape[0]:
        negative_logits = torch.einsum("bd,bnd->bn", z, negatives) / temperature
    else:
        raise ValueError(f"negatives must be (N,D) or (B,N,D) with B={z.shape[0]}; got {tuple(negatives.shape)}")
    if negative_mask is not None:
        if negative_mask.shape != negative_logits.shape:
            raise ValueError(f"negative_mask must be {tuple(negative_logits.shape)}, got {tuple(negative_mask.shape)}")
        negative_logits = negative_logits.masked_fill(~negative_mask, float("-inf"))
    logits = torch.cat([positive_logit, negative_logits], dim=1)
    return positive_logit.squeeze(1) - torch.logsumexp(logits, dim=1)
