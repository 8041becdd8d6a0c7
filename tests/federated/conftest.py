"""The defenses' tiny-model fixtures (2-layer MiniLM, tiny clean texts, a stage context), shared here."""

from tests.defenses.conftest import clean, context, pretrained, pretrained_model, tokenizer  # noqa: F401
