"""The merge math: task vectors, the exact merge, Fisher, closed-form λ. Pure tensor code.

It imports nothing of Potara outside this package (no training, data, models or I/O); the Fisher runs the
forward and backward passes of whatever torch module it is handed.
"""
