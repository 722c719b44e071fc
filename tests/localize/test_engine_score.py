"""Contrastive score, paper Eq. (1): hand-computed values on 2-D unit vectors."""
import math

import pytest
import torch

from occon_plugin.localize.score import contrastive_score

TAU = 0.5


def _vec(*values):
    return torch.tensor([values], dtype=torch.float64)


def test_score_matches_eq1_by_hand():
    z, key = _vec(1.0, 0.0), _vec(2.0, 0.0)  # cosine ignores norms: sim(z, key) = 1
    negatives = torch.tensor([[0.0, 3.0]], dtype=torch.float64)  # sim = 0
    expected = 1 / TAU - math.log(math.exp(1 / TAU) + math.exp(0.0))
    assert contrastive_score(z, key, negatives, TAU).item() == pytest.approx(expected, abs=1e-12)


def test_adding_a_masked_copy_adds_one_term_to_the_denominator():
    z, key = _vec(1.0, 0.0), _vec(1.0, 0.0)
    originals = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    masked_copy = torch.tensor([[1.0, 1.0]], dtype=torch.float64)  # sim = 1/sqrt(2)
    before = contrastive_score(z, key, originals, TAU).item()
    after = contrastive_score(z, key, torch.cat([originals, masked_copy]), TAU).item()
    pos, neg, masked = math.exp(1 / TAU), math.exp(0.0), math.exp((1 / math.sqrt(2)) / TAU)
    assert before == pytest.approx(math.log(pos / (pos + neg)), abs=1e-12)
    assert after == pytest.approx(math.log(pos / (pos + neg + masked)), abs=1e-12)


def test_positive_is_the_given_key_not_the_query():
    # Query = a masked view (z); positive = the ORIGINAL image's key: sim(z, key) = 0 here.
    z, key = _vec(0.0, 1.0), _vec(1.0, 0.0)
    negatives = torch.tensor([[-1.0, 0.0]], dtype=torch.float64)  # sim = 0
    expected = 0.0 - math.log(2.0)
    assert contrastive_score(z, key, negatives, TAU).item() == pytest.approx(expected, abs=1e-12)


def test_shared_bank_with_mask_equals_per_query_negatives():
    torch.manual_seed(0)
    z, key, bank = torch.randn(3, 5), torch.randn(3, 5), torch.randn(6, 5)
    use = torch.tensor([[1, 1, 0, 1, 0, 1], [0, 1, 1, 1, 1, 0], [1, 0, 1, 1, 0, 1]], dtype=torch.bool)
    masked = contrastive_score(z, key, bank, 0.2, negative_mask=use)
    per_query = torch.stack([contrastive_score(z[i:i + 1], key[i:i + 1], bank[use[i]], 0.2)[0] for i in range(3)])
    torch.testing.assert_close(masked, per_query)
    stacked = contrastive_score(z, key, torch.stack([bank[use[i]] for i in range(3)]), 0.2)
    torch.testing.assert_close(stacked, per_query)


def test_gradient_flows_to_the_query_only():
    z = torch.randn(2, 4, requires_grad=True)
    key = torch.randn(2, 4, requires_grad=True)
    contrastive_score(z, key, torch.randn(3, 4), 0.2).sum().backward()
    assert z.grad is not None and key.grad is None


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_rejects_non_positive_temperature(bad):
    with pytest.raises(ValueError, match="temperature"):
        contrastive_score(torch.ones(1, 2), torch.ones(1, 2), torch.ones(1, 2), bad)
