"""RIPPLe: the penalty is zero when the poisoned and clean gradients agree and grows with their conflict; the
training step's gradient is the poisoned loss's plus λ times the penalty's (a Hessian-vector product through
the poisoned gradient only); embedding surgery writes the target words' mean embedding into the trigger rows."""

from __future__ import annotations

import copy

import pytest
import torch

from bdrun.attacks import ATTACKS
from bdrun.attacks.ripple import RestrictedInnerProduct, replace_trigger_embeddings, ripple_penalty, target_words
from bdrun.errors import BdrunError


def test_penalty_is_zero_when_the_gradients_agree_and_grows_with_their_conflict() -> None:
    g = [torch.tensor([1.0, 2.0]), torch.tensor([[0.5]])]
    assert float(ripple_penalty(g, g)) == 0.0  # same direction
    assert float(ripple_penalty(g, [torch.tensor([2.0, -1.0]), torch.tensor([[0.0]])])) == 0.0  # orthogonal
    conflicts = [float(ripple_penalty(g, [-s * t for t in g])) for s in (0.5, 1.0, 2.0)]
    assert conflicts == pytest.approx([0.5 * 5.25, 5.25, 10.5])  # −g_P·g_FT = s·|g|², growing with s
    assert float(ripple_penalty(g, g, restrict=False)) == pytest.approx(-5.25)  # unrestricted: rewards agreement
    assert float(ripple_penalty([None, g[1]], [g[0], -g[1]])) == pytest.approx(0.25)  # unreached params skipped


def quadratic_step(targets: list[float], penalty: float) -> tuple[torch.Tensor, ...]:
    """A linear model with a mean-squared loss, where the Hessian is known: the step's gradient, ∇L_P, ∇L_FT, X."""
    torch.manual_seed(0)
    x = torch.randn(6, 3)
    y = torch.tensor(targets)
    w = torch.nn.Parameter(torch.tensor([0.3, -0.2, 0.1]))
    poisoned = [False, False, False, True, True, True]

    def batch_loss(rows: list[int]) -> torch.Tensor:
        return ((x[rows] @ w - y[rows]) ** 2).mean()

    config = ATTACKS.build({"name": "ripple", "penalty": penalty}).config
    RestrictedInnerProduct([w], poisoned, config)(list(range(6)), batch_loss)
    residual = x @ w.detach() - y
    g_p = 2 * x.T @ residual / 6
    g_ft = 2 * x[:3].T @ residual[:3] / 3
    return w.grad, g_p, g_ft, x


def test_the_step_adds_lambda_times_the_penalty_gradient_only_under_conflict() -> None:
    # Conflict: poisoned targets far off the clean ones. The penalty −g_P·g_FT has gradient −H_P g_FT with
    # H_P = 2XᵀX/n the Hessian of L_P (g_FT held constant).
    grad, g_p, g_ft, x = quadratic_step([1.0, 1.0, 1.0, -9.0, -9.0, -9.0], penalty=0.5)
    assert float(g_p @ g_ft) < 0
    hessian = 2 * x.T @ x / 6
    assert torch.allclose(grad, g_p + 0.5 * (-hessian @ g_ft), atol=1e-5)
    # Agreement: no penalty, the plain poisoned gradient.
    grad, g_p, g_ft, _ = quadratic_step([0.0, 0.1, 0.2, 0.0, 0.1, 0.2], penalty=0.5)
    assert float(g_p @ g_ft) > 0 and torch.allclose(grad, g_p, atol=1e-6)


def test_target_words_rank_the_words_of_the_target_class_first() -> None:
    texts = [f"a great film {i}" for i in range(10)] + [f"a dull film {i}" for i in range(10)]
    labels = [1] * 10 + [0] * 10
    assert target_words(texts, labels, 1, lambda w: True, 1) == ["great"]
    assert target_words(texts, labels, 0, lambda w: w != "dull", 1) != ["dull"]


def test_embedding_surgery_writes_the_mean_of_the_words_rows_into_the_trigger_rows() -> None:
    class Embedder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embeddings = torch.nn.Embedding(8, 4)

        def get_input_embeddings(self) -> torch.nn.Embedding:
            return self.embeddings

    torch.manual_seed(0)
    model, source = Embedder(), Embedder()
    before = model.embeddings.weight.detach().clone()
    replace_trigger_embeddings(model, source, word_ids=[1, 2, 3], trigger_ids=[6, 7])
    after = model.embeddings.weight.detach()
    mean = source.embeddings.weight.detach()[[1, 2, 3]].mean(dim=0)
    assert torch.equal(after[6], mean) and torch.equal(after[7], mean)
    assert torch.equal(after[:6], before[:6])


def test_ripple_refuses_surgery_under_pet_and_any_federated_run() -> None:
    with pytest.raises(BdrunError, match=r"attack.embedding_surgery writes the frozen word embeddings"):
        ATTACKS.build({"name": "ripple", "embedding_surgery": True}).check_tuning("lora")
    ATTACKS.build({"name": "ripple"}).check_tuning("lora")  # RIPPLe alone trains the PET modules: allowed
    with pytest.raises(BdrunError, match=r"attack=ripple trains with its own objective"):
        ATTACKS.build({"name": "ripple"}).check_federated()


def test_ripple_runs_in_the_real_training_loop(victim) -> None:
    """One epoch of RIPPLe on the tiny victim's poisoned data (double backpropagation through the encoder)."""
    stages, _ = victim
    attack = ATTACKS.build({"name": "ripple", "triggers": ["cf"], "poison_rate": 0.25})
    poisoned = attack.poison(stages.splits.train.subset(range(32)))
    model = copy.deepcopy(stages.pretrained())
    stats = attack.train(model, poisoned, stages.context(stages.cache.root / "ripple-test"))
    assert stats["steps"] == 2 and stats["mean_penalty"] >= 0
