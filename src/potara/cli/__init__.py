"""The ``potara`` command: ``run``, ``merge``, ``predict`` and ``bench``."""
