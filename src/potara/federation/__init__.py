"""The federated rounds: client and server steps, aggregation strategies, recipes, update validation, checkpoints."""
