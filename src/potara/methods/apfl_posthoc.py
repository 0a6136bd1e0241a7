"""APFL after the federation (a post-hoc variant of Deng et al., "Adaptive Personalized Federated Learning", 2020;
APFL proper is ``apfl``, which co-trains the personal adapter and its weight in the rounds).

Client ``k`` holds a local adapter ``v`` and a mixing weight ``α`` and uses ``α v + (1 − α) w_F``, with
both ``v`` and ``α`` trained by gradient descent on the loss *of the mixture*. Here ``w_F`` is the final FedIT
adapter (frozen), ``v`` starts from it and ``α`` from ½ (APFL's initial value), parametrised as
``α = sigmoid(s)`` (lr ``peers.apfl_alpha_lr``); they train jointly with the local budget (``local.*``, the
batches of ``fedit_ft``, at ``peers.apfl_lr_scale`` × ``local.lr``, the head at ``lora.head_lr_scale`` times the
lr). The mixture is the exact merge in
task-vector space (which, for the base weights, is the parameter mixture APFL writes). Reported ``lambda`` is
the federated weight, ``1 − α``.
"""

from __future__ import annotations

import dataclasses

import torch

from ..config import RunConfig
from ..merge.taskvec import extra_keys
from ..personalize.session import ClientSession
from ..training.loop import lr_groups, train_through_merge
from .base import Choice, Method


def build(cfg: RunConfig) -> Method:
    alpha_lr, lr_scale = cfg.peers.apfl_alpha_lr, cfg.peers.apfl_lr_scale

    def personalize(session: ClientSession) -> Choice:
        fed = session.fed
        local = {k: t.clone().requires_grad_(True) for k, t in fed.items()}
        logit = torch.zeros((), requires_grad=True)  # α = sigmoid(0) = ½

        def mixture() -> dict[str, torch.Tensor]:
            alpha = torch.sigmoid(logit)
            return session.merged([local, fed], [alpha, 1 - alpha], "delta")

        budget = dataclasses.replace(session.settings.local_budget, lr=session.settings.local_budget.lr * lr_scale)
        groups = [*lr_groups(local, budget, is_head=set(extra_keys(fed)).__contains__), {"params": [logit], "lr": alpha_lr}]
        train_through_merge(
            session.model, session.split("train"), budget, session.generator("federated"), groups, mixture,
        )
        alpha = float(torch.sigmoid(logit.detach()))
        local = {k: t.detach() for k, t in local.items()}
        return Choice([fed, local], [1 - alpha, alpha], lam=1 - alpha)

    return Method("apfl_posthoc", personalize, merge_space="delta")  # scored as trained: the exact ΔW merge
