"""Potara on Flower: a thin Message-API layer over :mod:`potara.federation.rounds`'s client and server steps.

``potara.flower.server_app:app`` and ``potara.flower.client_app:app`` are the components named in
``flower_app/pyproject.toml``; :func:`build_server_app` / :func:`build_client_app` make the same apps
with settings given in code (simulation, tests).
"""

from __future__ import annotations

from .client_app import build_client_app
from .server_app import build_server_app
from .settings import FlowerSettings

__all__ = ["FlowerSettings", "build_client_app", "build_server_app"]
