"""Potara: personalized federated LoRA with closed-form federated-local merging."""

__version__ = "0.1.0"
