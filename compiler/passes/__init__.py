"""Compiler passes and their registry.

`PASSES` is THE registry: pipeline name (kebab-case) -> pass class. Add a pass by importing its
class here and adding one line; no import-time registration magic. See docs/passes.md.
"""

from __future__ import annotations

from compiler.passes.balance import BalancePass
from compiler.passes.base import ModulePass
from compiler.passes.canonicalize import CanonicalizePass
from compiler.passes.dispatch import DispatchPass
from compiler.passes.fiddler_profile import FiddlerProfilePass
from compiler.passes.prefetch import PrefetchPass
from compiler.passes.strip_locations import StripLocationsPass
from compiler.passes.stripe import StripePass
from compiler.passes.tp_split import TpSplitPass

PASSES: dict[str, type[ModulePass]] = {
    "canonicalize": CanonicalizePass,
    "strip-locations": StripLocationsPass,
    "dispatch": DispatchPass,
    "fiddler-profile": FiddlerProfilePass,
    "stripe": StripePass,
    "tp-split": TpSplitPass,
    "balance": BalancePass,
    "prefetch": PrefetchPass,
}
