"""Potara on Flower: a thin Message-API layer over :mod:`potara.federation.rounds`'s client and server steps.

``potara.flower.server_app:app`` and ``potara.flower.client_app:app`` are the components named in
``flower_app/pyproject.toml``; :func:`~potara.flower.server_app.build_server_app` and
:func:`~potara.flower.client_app.build_client_app` make the same apps with settings given in code (simulation,
tests). Nothing is imported here, so that ``python -m potara.flower.certs`` loads neither torch nor Flower.
"""
