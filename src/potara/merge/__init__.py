"""The merge math: task vectors, the exact merge, Fisher, closed-form λ. Pure tensor code.

It imports nothing of Potara outside this package (no training, data, models or I/O); the Fisher runs the
forward and backward passes of whatever torch module it is handed.
"""

from .fisher import model_fisher
from .mixing import closed_form_lambda, module_lambdas
from .taskvec import AdapterState, merge, merge_factors, pad_rank, task_vector

__all__ = [
    "AdapterState", "closed_form_lambda", "merge", "merge_factors", "model_fisher", "module_lambdas", "pad_rank",
    "task_vector",
]
