"""A run's outputs (summary, table, plots), paired statistics and the communication analysis. Torch-free."""
