"""Aggregators on toy update vectors: each test checks the rule's defining property."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from bdrun.errors import BdrunError
from bdrun.federated import AGGREGATORS, RoundUpdates


def build(name: str, **knobs):
    return AGGREGATORS.build({"name": name, **knobs})


def round_of(updates: torch.Tensor, embeddings: torch.Tensor | None = None, round_no: int = 0) -> RoundUpdates:
    n = updates.shape[0]
    return RoundUpdates(updates, list(range(n)), torch.ones(n), round=round_no, seed=0, embeddings=embeddings)


def stealthy_round(seed: int = 0, spike: float = 10.0, spiked: int = 5) -> tuple[torch.Tensor, int]:
    """Nine honest updates (shared direction + unit noise) and one malicious update at the honest mean plus a
    ``spike`` on ``spiked`` coordinates: small in L2 (closer to everyone than honest clients are to each other),
    large in a few dimensions, like an NLP backdoor."""
    g = torch.Generator().manual_seed(seed)
    d = 2000
    common = torch.randn(d, generator=g)
    honest = common + torch.randn(9, d, generator=g)
    malicious = honest.mean(dim=0).clone()
    malicious[:spiked] += spike
    return torch.cat([honest, malicious[None]]), 9


def test_krum_picks_the_honest_client_closest_to_the_others() -> None:
    honest = torch.tensor([[0.0, 0, 0], [1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0]])
    updates = torch.cat([honest, torch.tensor([[10.0, 10, 10]])])
    result = build("krum", byzantine=1).aggregate(round_of(updates))
    assert torch.equal(result.update, honest[0])
    assert result.dropped == [1, 2, 3, 4, 5]


def test_multi_krum_averages_the_n_minus_f_best_and_drops_the_outlier() -> None:
    honest = torch.tensor([[0.0, 0, 0], [1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0]])
    updates = torch.cat([honest, torch.tensor([[10.0, 10, 10]])])
    result = build("multi_krum", byzantine=1).aggregate(round_of(updates))
    assert result.dropped == [5]
    assert torch.allclose(result.update, honest.mean(dim=0))


def test_bulyan_drops_the_outlier_by_repeated_krum_then_trims_per_coordinate() -> None:
    g = torch.Generator().manual_seed(6)
    updates = torch.cat([torch.randn(6, 40, generator=g), torch.full((1, 40), 50.0)])
    result = build("bulyan", byzantine=1).aggregate(round_of(updates))
    assert 6 in result.dropped and len(result.dropped) == 2  # n - 2f = 5 picked
    picked = updates[[i for i in range(7) if i not in result.dropped]]
    assert np.allclose(result.update.numpy(), stats.trim_mean(picked.numpy(), 1 / 5, axis=0), atol=1e-6)


@pytest.mark.parametrize("n", [7, 8])
def test_median_equals_numpy(n: int) -> None:
    updates = torch.randn(n, 301, generator=torch.Generator().manual_seed(n))
    result = build("median").aggregate(round_of(updates))
    assert np.allclose(result.update.numpy(), np.median(updates.numpy(), axis=0), atol=1e-6)
    assert result.dropped == []


@pytest.mark.parametrize(("n", "trim"), [(10, 0.1), (10, 0.25), (7, 0.2), (5, 0.0)])
def test_trimmed_mean_equals_scipy(n: int, trim: float) -> None:
    updates = torch.randn(n, 301, generator=torch.Generator().manual_seed(n))
    result = build("trimmed_mean", trim=trim).aggregate(round_of(updates))
    assert np.allclose(result.update.numpy(), stats.trim_mean(updates.numpy(), trim, axis=0), atol=1e-6)


def test_coordinatewise_rules_work_across_column_chunks(monkeypatch) -> None:
    from bdrun.federated.aggregators import base  # the helpers read CHUNK there

    monkeypatch.setattr(base, "CHUNK", 64)
    updates = torch.randn(6, 301, generator=torch.Generator().manual_seed(3))
    assert np.allclose(build("median").aggregate(round_of(updates)).update.numpy(), np.median(updates.numpy(), 0))
    distances = base.pairwise_sq_distances(updates)
    assert torch.allclose(distances, torch.cdist(updates.double(), updates.double()).pow(2), atol=1e-8)


@pytest.mark.parametrize("rho", [0.001, 0.01, 0.3, 1.0])
def test_dim_distances_equal_the_brute_force_top_k_sum(rho: float) -> None:
    """The candidate-column shortcut is exact: the same sums as a full top-k over every coordinate per pair."""
    from bdrun.federated.aggregators import dim_distances

    updates, _ = stealthy_round(seed=4)
    updates[3, 100:140] += 2.0  # a second, wider anomaly
    k = max(1, int(np.ceil(rho * updates.shape[1])))
    expected = torch.zeros(10, 10, dtype=torch.float64)
    for i in range(10):
        for j in range(10):
            if i != j:
                expected[i, j] = (updates[i] - updates[j]).pow(2).topk(k).values.double().sum()
    assert torch.allclose(dim_distances(updates, rho), expected, rtol=1e-6)


def test_fedavg_weights_by_sample_count() -> None:
    updates = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    weighted = RoundUpdates(updates, [0, 1], torch.tensor([3.0, 1.0]))
    assert torch.allclose(build("fedavg").aggregate(weighted).update, torch.tensor([0.75, 0.25]))
    assert torch.allclose(build("fedavg", weighted=False).aggregate(weighted).update, torch.tensor([0.5, 0.5]))


def test_small_l2_backdoor_is_kept_by_krum_and_dropped_by_dim_krum() -> None:
    updates, bad = stealthy_round()
    l2 = torch.cdist(updates, updates)
    assert l2[bad, :bad].max() < l2[:bad, :bad][~torch.eye(bad, dtype=torch.bool)].min()  # small in L2
    assert bad not in build("krum", byzantine=1).aggregate(round_of(updates)).dropped
    assert bad not in build("multi_krum", byzantine=1).aggregate(round_of(updates)).dropped
    assert bad in build("dim_krum", byzantine=1, rho=0.0025, memory=0).aggregate(round_of(updates)).dropped
    multi = build("dim_krum", byzantine=1, rho=0.0025, memory=0, keep=None).aggregate(round_of(updates))
    assert multi.dropped == [bad]


def test_dim_krum_memory_remembers_a_client_that_was_malicious_earlier() -> None:
    """Round 0: client 9 carries the spike. Round 1: it behaves. With memory its score stays the worst."""
    first, bad = stealthy_round(seed=0, spike=30.0)
    second = torch.randn(10, 2000, generator=torch.Generator().manual_seed(5))
    with_memory = build("dim_krum", byzantine=1, rho=0.0025, memory=0.9, keep=None)
    without = build("dim_krum", byzantine=1, rho=0.0025, memory=0, keep=None)
    for aggregator in (with_memory, without):
        aggregator.aggregate(round_of(first, round_no=0))
    assert with_memory.aggregate(round_of(second, round_no=1)).dropped == [bad]
    assert without.aggregate(round_of(second, round_no=1)).dropped != [bad]

    restored = build("dim_krum", byzantine=1, rho=0.0025, memory=0.9, keep=None)
    restored.load_state(with_memory.state())
    assert restored.memory == with_memory.memory


def test_dim_krum_adaptive_noise_follows_the_client_spread() -> None:
    updates = torch.randn(6, 500, generator=torch.Generator().manual_seed(1))
    updates[:, :100] = 0.5  # every client agrees on these coordinates: no spread, so no noise
    quiet = build("dim_krum", byzantine=1, keep=None, memory=0, noise=0).aggregate(round_of(updates))
    noisy = build("dim_krum", byzantine=1, keep=None, memory=0, noise=0.5).aggregate(round_of(updates))
    again = build("dim_krum", byzantine=1, keep=None, memory=0, noise=0.5).aggregate(round_of(updates))
    assert torch.equal(noisy.update, again.update)  # seeded by (seed, round)
    assert torch.equal(noisy.update[:100], quiet.update[:100])
    added = noisy.update[100:] - quiet.update[100:]
    expected = 0.5 * updates[:, 100:].std(dim=0, correction=0)
    assert 0.8 < (added / expected).std() < 1.2  # standard normal after dividing by lambda * spread


def test_client_embedding_selects_on_embeddings_not_parameters() -> None:
    """Parameter updates say nothing; the embeddings single out client 4, so it is the one dropped."""
    updates = torch.randn(5, 50, generator=torch.Generator().manual_seed(2))
    embeddings = torch.zeros(5, 8)
    embeddings[4] = 1.0
    for selector in ("multi_krum", "dim_krum"):
        result = build("client_embedding", selector=selector, byzantine=1).aggregate(round_of(updates, embeddings))
        assert result.dropped == [4]
        assert torch.allclose(result.update, updates[:4].mean(dim=0))
    krum = build("client_embedding", selector="krum", byzantine=1).aggregate(round_of(updates, embeddings))
    assert 4 in krum.dropped and len(krum.dropped) == 4
    with pytest.raises(BdrunError, match="client embeddings"):
        build("client_embedding").aggregate(round_of(updates))


def test_bad_knobs_fail_in_one_line() -> None:
    with pytest.raises(BdrunError, match=r"defense\.trim"):
        build("trimmed_mean", trim=0.5)
    with pytest.raises(BdrunError, match=r"defense\.selector"):
        build("client_embedding", selector="median")
    with pytest.raises(BdrunError, match="unknown defense"):
        build("bulyanx")
