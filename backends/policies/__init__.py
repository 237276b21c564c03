"""Run-time dispatch policies, one module per `ir.attrs.DispatchRule` (see `base.py`)."""

from __future__ import annotations

import importlib

from backends.policies.base import DispatchPolicy
from ir.attrs import DispatchRule


def policy_class(rule: DispatchRule) -> type[DispatchPolicy]:
    """The policy class for `rule`: `backends.policies.<rule.value>.POLICY`."""
    try:
        module = importlib.import_module(f"backends.policies.{rule.value}")
    except ModuleNotFoundError as err:
        raise ValueError(f"no run-time policy implements dispatch rule '{rule.value}'") from err
    policy = getattr(module, "POLICY", None)
    if policy is None:
        raise ValueError(f"backends.policies.{rule.value} defines no POLICY")
    return policy
