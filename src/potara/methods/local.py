"""Local only: a LoRA adapter trained from the pretrained base on the client's data; nothing travels."""

from __future__ import annotations

from ..config import RunConfig
from ..personalize.session import ClientSession
from .base import Choice, Method


def build(cfg: RunConfig) -> Method:
    def personalize(session: ClientSession) -> Choice:
        return Choice([session.local("pretrained")], [1.0])

    return Method("local", personalize, federated=False)
