"""The ``potara`` terminal: third-party noise silenced at its source by default, everything shown with ``-v``.

Only the command line calls this: importing ``potara`` as a library leaves the user's warnings and logs alone.
"""

from __future__ import annotations

import logging
import warnings

DEPENDENCIES = r"(transformers|peft|datasets|huggingface_hub|flwr_datasets|torch)(\.|$)"


def quiet() -> None:
    """Silence what a run prints that is neither its progress nor its result."""
    import datasets
    import huggingface_hub.utils
    import transformers.utils.logging

    # the `classes` partition leaves out the labels no client drew: that is the partition, not a problem
    warnings.filterwarnings("ignore", message=r"Classes: .* will NOT be used", module=r"flwr_datasets\.")
    # deprecations inside our pinned dependencies (peft reading `is_gradient_checkpointing`): not the user's to fix
    warnings.filterwarnings("ignore", category=FutureWarning, module=DEPENDENCIES)
    # "layers were not sharded" (no tensor parallelism on one device), "newly initialized" (the head we train)
    transformers.utils.logging.set_verbosity_error()
    # "Loading weights": a bar per model load, over in a second
    transformers.utils.logging.disable_progress_bar()
    # map / filter / download bars over a few hundred rows
    datasets.disable_progress_bars()
    huggingface_hub.utils.disable_progress_bars()
    # dp-accounting: "failed to converge ... excluding this order", per RDP order (dozens at z = 0.5): the other
    # orders bound ε, nothing for the user to do
    logging.getLogger("absl").setLevel(logging.ERROR)


def verbose() -> None:
    """Our INFO logs on stderr, with every third-party warning, log and progress bar left as it is."""
    logger = logging.getLogger("potara")
    logger.setLevel(logging.INFO)
    if not logger.handlers:  # once, however often the command runs in one process
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
