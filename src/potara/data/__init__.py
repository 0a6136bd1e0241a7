"""Datasets, their split into federated clients, causal-LM prompts, and splits encoded as tensors."""
