"""model.tuning=parallel_adapter (He et al. 2022): a scaled bottleneck of the FFN's input added to the FFN's
output in every encoder layer, and nowhere else; pre-trained names unchanged."""

from __future__ import annotations

import pytest
import torch

from bdrun.errors import BdrunError
from bdrun.models import ModelConfig, load_pretrained
from bdrun.pet.parallel_adapter import ParallelFFNOutput, insert_parallel_adapters
from tests.pet.test_tuning import MINILM


def parallel_model(scale: float = 4.0) -> torch.nn.Module:
    cfg = ModelConfig(name="minilm", path=MINILM.path, num_layers=2, tuning="parallel_adapter", adapter_scale=scale)
    return load_pretrained(cfg, 2, seed=3).eval()


def test_the_ffn_output_gets_the_scaled_bottleneck_of_the_ffn_input_added() -> None:
    model = parallel_model(scale=4.0)
    layer = model.bert.encoder.layer[1]
    module = layer.output
    assert isinstance(module, ParallelFFNOutput)
    assert not isinstance(layer.attention.output, ParallelFFNOutput)  # beside the FFN only
    adapter = module.parallel_adapter
    with torch.no_grad():  # a trained-looking adapter: non-zero up-projection
        adapter.up.weight.normal_(std=0.05)
        adapter.up.bias.normal_(std=0.05)
    generator = torch.Generator().manual_seed(0)
    intermediate = torch.randn(2, 5, module.dense.in_features, generator=generator)
    x = torch.randn(2, 5, module.dense.out_features, generator=generator)  # the FFN's input (attention output)
    branch = adapter.up(torch.relu(adapter.down(x)))
    expected = module.LayerNorm(module.dense(intermediate) + 4.0 * branch + x)
    assert torch.allclose(module(intermediate, x), expected, atol=1e-6)
    assert branch.abs().max() > 1e-3  # the branch matters, so the scale is tested
    plain = module.LayerNorm(module.dense(intermediate) + x)
    assert not torch.allclose(module(intermediate, x), plain, atol=1e-4)


def test_pre_trained_names_stay_and_adapter_names_carry_their_layer() -> None:
    plain = load_pretrained(ModelConfig(name="minilm", path=MINILM.path, num_layers=2), 2, seed=3)
    model = parallel_model()
    names = dict(model.named_parameters())
    for name, param in plain.named_parameters():
        assert torch.equal(names[name], param), name
    added = sorted(set(names) - set(dict(plain.named_parameters())))
    assert added == sorted(
        f"bert.encoder.layer.{i}.output.parallel_adapter.{part}.{kind}"
        for i in range(2)
        for part in ("down", "up")
        for kind in ("weight", "bias")
    )
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(added) | {"classifier.weight", "classifier.bias"}


def test_a_model_without_bert_style_ffn_outputs_is_refused_in_one_line() -> None:
    with pytest.raises(BdrunError, match=r"model\.tuning=parallel_adapter found no BERT-style"):
        insert_parallel_adapters(torch.nn.Sequential(torch.nn.Linear(4, 4)), 8, 4.0)
