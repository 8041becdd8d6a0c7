"""bdrun: an experiment runner for NLP backdoor attacks and defenses."""

__version__ = "0.1.0"
