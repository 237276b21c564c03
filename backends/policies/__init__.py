"""Run-time dispatch policies, one module per `ndpc.ir.attrs.DispatchRule` (see `base.py`)."""

from __future__ import annotations

import importlib

from ndpc.backends.policies.base import DispatchPolicy
from ndpc.ir.attrs import DispatchRule


def policy_class(rule: DispatchRule) -> type[DispatchPolicy]:
    """The policy class for `rule`: `ndpc.backends.policies.<rule.value>.POLICY`."""
    try:
        module = importlib.import_module(f"ndpc.backends.policies.{rule.value}")
    except ModuleNotFoundError as err:
        raise ValueError(f"no run-time policy implements dispatch rule '{rule.value}'") from err
    policy = getattr(module, "POLICY", None)
    if policy is None:
        raise ValueError(f"ndpc.backends.policies.{rule.value} defines no POLICY")
    return policy
