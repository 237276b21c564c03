"""Compiler passes and their registry.

`PASSES` is THE registry: pipeline name (kebab-case) -> pass class. Add a pass by importing its
class here and adding one line; no import-time registration magic. See docs/passes.md.
"""

from __future__ import annotations

from ndpc.compiler.passes.balance import BalancePass
from ndpc.compiler.passes.base import ModulePass
from ndpc.compiler.passes.canonicalize import CanonicalizePass
from ndpc.compiler.passes.dispatch import DispatchPass
from ndpc.compiler.passes.fiddler_profile import FiddlerProfilePass
from ndpc.compiler.passes.prefetch import PrefetchPass
from ndpc.compiler.passes.quantize import QuantizePass
from ndpc.compiler.passes.strip_locations import StripLocationsPass
from ndpc.compiler.passes.stripe import StripePass
from ndpc.compiler.passes.tp_split import TpSplitPass
from ndpc.compiler.passes.trimoe import TrimoePass

PASSES: dict[str, type[ModulePass]] = {
    "canonicalize": CanonicalizePass,
    "strip-locations": StripLocationsPass,
    "quantize": QuantizePass,
    "dispatch": DispatchPass,
    "fiddler-profile": FiddlerProfilePass,
    "stripe": StripePass,
    "tp-split": TpSplitPass,
    "balance": BalancePass,
    "prefetch": PrefetchPass,
    "trimoe": TrimoePass,
}
