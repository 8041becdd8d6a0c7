"""The regime diagnostics: per round and client, what Krum and Dim-Krum see, logged for every aggregator."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from bdrun.attacks import ATTACKS
from bdrun.errors import BdrunError
from bdrun.federated import AGGREGATORS, FederatedConfig, federation
from bdrun.federated.diagnostics import diagnostic_knobs, regime_counts, round_diagnostics, tracker_point
from bdrun.federated.federation import Federation, run_federation
from bdrun.federated.plots import regime_series, write_regime_plot
from bdrun.federated.setting import malicious_clients
from tests.federated.test_federation import tiny_splits

CLIENTS, DIM, RHO, BYZANTINE = 6, 400, 0.01, 1  # k = 4 selected coordinates, 6 - 1 - 2 = 3 neighbours


def few_coordinate_outlier(bad: int) -> torch.Tensor:
    """Five honest updates (a shared direction plus unit noise) and, in row ``bad``, the honest mean plus 10 on
    three coordinates: closer to every honest client in L2 (about 25) than they are to each other (about 28, two
    unit-noise vectors of 400 entries apart), far out on those three coordinates."""
    g = torch.Generator().manual_seed(11)
    honest = torch.randn(DIM, generator=g) + torch.randn(CLIENTS - 1, DIM, generator=g)
    outlier = honest.mean(dim=0).clone()
    outlier[[7, 100, 333]] += 10.0
    rows = list(honest)
    rows.insert(bad, outlier)
    return torch.stack(rows)


def by_hand(updates: torch.Tensor) -> dict[str, list[float]]:
    """The three scores with plain loops over float64 values: no code shared with the implementation."""
    x = updates.double().tolist()
    n, d = len(x), len(x[0])
    k = math.ceil(RHO * d)
    neighbours = n - BYZANTINE - 2

    def krum(distance) -> list[float]:
        return [sum(sorted(distance(i, j) for j in range(n) if j != i)[:neighbours]) for i in range(n)]

    def l2(i: int, j: int) -> float:
        return sum((a - b) ** 2 for a, b in zip(x[i], x[j], strict=True))

    def dim(i: int, j: int) -> float:
        return sum(sorted(((a - b) ** 2 for a, b in zip(x[i], x[j], strict=True)), reverse=True)[:k])

    spans = [max(row[c] for row in x) - min(row[c] for row in x) for c in range(d)]
    widest = sorted(range(d), key=lambda c: spans[c], reverse=True)[:k]
    strength = [sum(abs(row[c]) for c in widest) / k for row in x]
    return {"l2_score": krum(l2), "dim_score": krum(dim), "selected_strength": strength}


def test_round_diagnostics_equal_a_hand_computation_and_show_the_regime() -> None:
    updates = few_coordinate_outlier(bad=2)
    got, expected = round_diagnostics(updates, BYZANTINE, RHO), by_hand(updates)
    for score in expected:
        assert got[score] == pytest.approx(expected[score], rel=1e-5), score
    honest = [i for i in range(CLIENTS) if i != 2]
    assert got["l2_score"][2] < max(got["l2_score"][i] for i in honest)  # inside the honest L2 spread
    for score in ("dim_score", "selected_strength"):
        assert got[score][2] > 2 * max(got[score][i] for i in honest)  # far outside on the selected coordinates


def test_a_fedavg_federation_logs_the_hand_computed_scores_per_client_and_round(pretrained, context, monkeypatch):
    """The logged numbers are those of the updates the server received, under FedAvg (which uses none of them)."""
    bad = malicious_clients(CLIENTS, 1, seed=context.seed)[0]
    updates = few_coordinate_outlier(bad)
    # The server's side only: a global model of DIM entries, and each client sends its constructed row.
    monkeypatch.setattr(federation, "vector_of", lambda model: torch.zeros(DIM))
    monkeypatch.setattr(federation, "load_vector", lambda model, vector: None)
    monkeypatch.setattr(federation, "local_update", lambda *args, desc, **kw: updates[int(desc.split()[-1])].clone())
    monkeypatch.setattr(federation, "diagnostic_knobs", lambda config: (BYZANTINE, RHO))
    setting = FederatedConfig(name="iid", clients=CLIENTS, malicious=1, rounds=2, eval_every=0)
    attack = ATTACKS.build({"name": "badnets", "poison_rate": 0.1})
    fed = Federation(setting, AGGREGATORS.build({"name": "fedavg"}), attack=attack, eval_attack=attack)
    report = run_federation(pretrained, tiny_splits(), fed, context, "t")

    expected = by_hand(updates)
    for record in report["rounds"]:
        assert record["clients"] == list(range(CLIENTS)) and record["malicious"] == [bad]
        for score, values in expected.items():
            assert record[score] == pytest.approx(values, rel=1e-5)
    point = tracker_point(report["rounds"][0], "backdoored")
    assert point["rounds/backdoored/l2_score/malicious"] == pytest.approx(expected["l2_score"][bad], rel=1e-5)
    assert point["rounds/backdoored/dim_score/malicious"] > point["rounds/backdoored/dim_score/honest_max"]
    assert point["rounds/backdoored/l2_score/malicious"] < point["rounds/backdoored/l2_score/honest_max"]


def test_diagnostics_use_the_aggregators_own_f_and_rho_and_dim_krum_defaults_otherwise() -> None:
    assert diagnostic_knobs(AGGREGATORS.build({"name": "fedavg"}).config) == (0.2, 1e-3)
    assert diagnostic_knobs(AGGREGATORS.build({"name": "krum", "byzantine": 2}).config) == (2, 1e-3)
    assert diagnostic_knobs(AGGREGATORS.build({"name": "dim_krum", "rho": 0.01}).config) == (0.2, 0.01)
    assert diagnostic_knobs(AGGREGATORS.build({"name": "client_embedding", "rho": 0.5}).config) == (0.2, 1e-3)


def regime_report(with_scores: bool = True) -> dict:
    rounds = []
    for r in (1, 2):
        record = {"round": r, "clients": [0, 1, 2, 3], "malicious": [3]}
        if with_scores:
            record |= {"l2_score": [1.0, 2.0, 3.0, 2.0], "dim_score": [1.0, 1.0, 1.0, 9.0]}
            record["selected_strength"] = [0.5, 0.5, 0.5, 5.0]
        rounds.append(record)
    return {"federation": {"clean": {"rounds": []}, "backdoored": {"rounds": rounds, "malicious_clients": [3]}}}


def test_the_regime_plot_normalises_by_the_honest_median_and_writes_a_png(tmp_path: Path) -> None:
    honest, malicious = regime_series(regime_report()["federation"]["backdoored"]["rounds"], "l2_score")
    assert malicious == [(1, 1.0), (2, 1.0)]  # 2.0 over the honest median 2.0: inside the spread
    assert sorted(v for _, v in honest) == [0.5, 0.5, 1.0, 1.0, 1.5, 1.5]
    path = write_regime_plot(regime_report(), tmp_path / "plots" / "regime.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(BdrunError, match="no per-client diagnostics"):
        write_regime_plot(regime_report(with_scores=False), tmp_path / "old.png")
    with pytest.raises(BdrunError, match="no federation 'purified'"):
        write_regime_plot(regime_report(), tmp_path / "x.png", role="purified")


def test_regime_counts_say_how_often_the_attacker_hid_in_l2_and_stood_out_on_the_selected_coordinates() -> None:
    rounds = regime_report()["federation"]["backdoored"]["rounds"]
    assert regime_counts(rounds) == {"malicious": 2, "inside_l2": 2, "outside_selected": 2}
    rounds[1]["l2_score"][3] = 10.0  # an L2 outlier in round 2
    rounds[0]["selected_strength"][3] = 0.1
    assert regime_counts(rounds) == {"malicious": 2, "inside_l2": 1, "outside_selected": 1}
