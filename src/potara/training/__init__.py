"""Local training and evaluation of an adapter on one client's tensors, the causal-LM evaluation, what work costs."""
