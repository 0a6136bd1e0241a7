"""The ``potara`` command: ``run``, ``merge`` and ``bench``."""
