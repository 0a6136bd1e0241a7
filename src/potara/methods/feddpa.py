"""FedDPA (Yang et al., "Dual-Personalizing Adapter for Federated Foundation Models", NeurIPS 2024): a global
adapter, a local adapter, and an instance-wise weight on the local one.

- Global adapter: the final FedIT adapter ``τ_F`` (FedDPA's global adapter is FedAvg-trained LoRA).
- Instance-wise weight ``α(x)`` = ``peers.feddpa_weight_cap`` × the mean cosine similarity between ``x``'s
  representation and those of the client's training inputs, clipped to [0, 1] (the authors' rule, ``w`` × the
  mean similarity to sampled training inputs, over all of them instead of 5 sampled; a cap above 1 makes ``α``
  saturate at 1 for the inputs whose similarity is at least 1/cap). Representations: the frozen base model's
  last hidden states, mean-pooled over tokens. ``α(x)`` is rounded to ``peers.feddpa_levels`` levels.
- Model of an input ``x``: ``W0 + τ_F + α(x) τ_L``, one exact merge per level over that level's inputs. The dual
  model is a sum of two adapters, not an average, so it is always merged in ΔW space, whatever
  ``potara.merge_space`` says.
- Local adapter ``τ_L``: a fresh LoRA (the shared initialisation, ``B = 0``) trained on the client's data with the
  global one frozen (FedDPA-F: global first, then local), *under the weighting it is used with*: each training
  input ``x`` goes through ``W0 + τ_F + α(x) τ_L`` with its own ``α(x)`` (same rule, same levels), a batch's loss
  the mean of its examples' (LoRA is linear in ``τ_L``: one merge per level in the batch). Local budget
  (``local.*``, the batches of ``fedit_ft``) at ``peers.feddpa_lr_scale`` × ``local.lr``, the head at
  ``lora.head_lr_scale`` times it as in every method.
- The head: FedDPA's setting is an LLM with no classifier head; ``α(x)`` is the weight of the local LoRA. Our
  classifier head is personal state, trained with the local adapter like every method's head (it starts at the
  global head), so the model of ``x`` uses it at full weight: merge weights ``[1, α(x)]`` on the LoRA modules,
  ``[0, 1]`` on the head. Scaling the head by ``α(x)`` too would hand the inputs with small ``α`` the federated
  head, i.e. FedIT.
- Reported ``lambda`` = ``1 − mean α(x)`` over the client's training inputs (the test split is only scored, and a
  method is not charged for passes over it): on the LoRA modules
  ``τ_F + α τ_L = (1 − α) τ_F + α (τ_F + τ_L)``, so it is the federated weight against the dual model, as λ
  is everywhere.

What the authors' code does (``Lydia-yang/FedDPA``, ``code/``), and where we differ: their LoRA layer adds the
active adapter at weight ``adapter_weight[0]`` and each other one, detached, at ``adapter_weight[i + 1]``
(``peft/tuners/lora/layer.py``). Training the local adapter (``fed_utils/client.py`` ``set_local``, FedDPA-T)
uses ``a · τ_L + (1 − a) · τ_G`` with one fixed ``a`` = ``local_weight`` (0.5) for every input, not ``α(x)``;
inference (``GlobalModel_generated.py``, ``auto``) sets ``[α(x), 1 − α(x)]`` with the global adapter active, i.e.
``α(x) τ_G + (1 − α(x)) τ_L``, ``α(x)`` = ``w`` (1, or 0.5 with ``half``, or ``max_weight``) × the mean cosine
similarity of last-token hidden states of the local model to 5 sampled training instructions. We keep the
global adapter whole and weight the local one by ``α(x)`` (the paper's "global + instance-weighted local"
reading), train the local adapter under that same ``α(x)``, and use mean-pooled frozen-base representations
over all training inputs.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from ..config import RunConfig
from ..data.encoding import Encoded
from ..merge.taskvec import AdapterState, extra_keys, groups, lora_modules
from ..personalize.session import ClientSession
from ..training.loop import base_representations, lr_groups, train_through_levels
from .base import Choice, Method


def dual_weights(state: AdapterState, alpha: float) -> list[dict[str, float]]:
    """Merge weights of ``[global, local]`` for ``τ_F + α τ_L`` with the local head: LoRA modules ``[1, α]``,
    saved modules (the head, a full copy) ``[0, 1]``."""
    lora = set(lora_modules(state))
    return [{g: 1.0 if g in lora else 0.0 for g in groups(state)}, {g: alpha if g in lora else 1.0 for g in groups(state)}]


def instance_weights(session: ClientSession, data: Encoded, cap: float = 1.0, reference: Tensor | None = None) -> Tensor:
    """``α(x)`` for every input of ``data``: ``cap`` × the mean cosine similarity to the client's training
    inputs, clipped to [0, 1] (``cap`` is the authors' ``w``, ``peers.feddpa_weight_cap``); ``reference``:
    :func:`training_reference`, computed here when not given."""
    if len(data) == 0:
        return torch.empty(0)
    reference = training_reference(session) if reference is None else reference
    return similarity_weights(unit_representations(session, data), reference, cap)


def similarity_weights(unit_reps: Tensor, reference: Tensor, cap: float) -> Tensor:
    """``cap`` × each unit representation's cosine with the (mean) ``reference``, clipped to [0, 1]."""
    return (cap * (unit_reps @ reference)).clamp(0.0, 1.0)


def training_reference(session: ClientSession) -> Tensor:
    """The mean unit representation of the client's training inputs (frozen base model)."""
    return unit_representations(session, session.split("train")).mean(0)


def unit_representations(session: ClientSession, data: Encoded) -> Tensor:
    """The frozen base model's mean-pooled representation of every input of ``data``, at unit length."""
    reps = base_representations(session.model, data, session.settings.eval_batch_size)
    return torch.nn.functional.normalize(reps, dim=-1)


def levels_of(alpha: Tensor, levels: int) -> Tensor:
    """``alpha`` rounded to the nearest of ``levels`` evenly spaced values of [0, 1]."""
    return torch.round(alpha * (levels - 1)) / (levels - 1)


def build(cfg: RunConfig) -> Method:
    levels, cap, lr_scale = cfg.peers.feddpa_levels, cfg.peers.feddpa_weight_cap, cfg.peers.feddpa_lr_scale

    def personalize(session: ClientSession) -> Choice:
        fed, train = session.fed, session.split("train")
        if len(train) == 0:
            return Choice([fed], [1.0], lam=1.0, note="no training data: federated model")
        train_reps = unit_representations(session, train)
        reference = train_reps.mean(0)  # the same for every split the model is asked about
        train_alpha = similarity_weights(train_reps, reference, cap)
        start = {**session.pretrained, **{k: fed[k] for k in extra_keys(fed)}}
        local = {k: t.clone().requires_grad_(True) for k, t in start.items()}
        budget = dataclasses.replace(session.settings.local_budget, lr=session.settings.local_budget.lr * lr_scale)
        train_through_levels(
            session.model, train, budget, session.generator("federated"),
            lr_groups(local, budget, is_head=set(extra_keys(fed)).__contains__),
            lambda alpha: session.merged([fed, local], dual_weights(fed, alpha), "delta"),
            levels_of(train_alpha, levels),
        )
        local = {k: t.detach() for k, t in local.items()}

        def logits(data: Encoded) -> Tensor:
            """Per instance: the merge at its weight α(x), one forward pass per level over that level's inputs."""
            alpha = levels_of(instance_weights(session, data, cap, reference), levels)
            parts = [(alpha == level).nonzero().squeeze(1) for level in alpha.unique()]
            out = [session.predict_merged([fed, local], dual_weights(fed, float(alpha[index[0]])), data.subset(index),
                                          "delta") for index in parts]
            if not out:
                return torch.empty(0)
            return torch.cat(out).index_select(0, torch.argsort(torch.cat(parts)))

        mean_alpha = float(train_alpha.mean())
        return Choice([fed, local], dual_weights(fed, mean_alpha), lam=1 - mean_alpha, logits=logits)

    return Method("feddpa", personalize)
