"""The expert cost model: how long one routed expert's work takes on each resource.

`ExpertTimes` wraps the target's `CostModel` for one expert shape (`FfnAttr`): GPU, NDP-shard and
host-CPU compute, weight copies over the host link, activation and partial-sum transfers. The
compiler's passes (tp-split's degree and reduction-site choice) and the run-time dispatch
policies both ask it, so they price work the same way the emitter charges it.
"""

from __future__ import annotations

from ndpc.backends.cost import CostModel
from ndpc.ir.attrs import FfnAttr


class ExpertTimes:
    """Uncontended times (seconds) of one expert's work (`ffn`), from the cost model, memoised.

    Policies and passes use these instead of re-deriving work; the cost model stays the only
    place that turns work into time. `tokens` is the number of tokens routed to the expert.
    """

    def __init__(self, ffn: FfnAttr, cost: CostModel, act_bytes: float) -> None:
        self.ffn = ffn
        self.cost = cost
        self.act_bytes = act_bytes
        self._memo: dict[tuple[str, int, int], float] = {}
        self._gpu: dict[int, float] = {}
        self._ndp: dict[tuple[int, int], float] = {}
        self._hold: dict[int, float] = {}
        # the shape's numbers, read once (FfnAttr derives them on every access)
        self._fpt, self._wbytes, self._d = ffn.flops_per_token(), ffn.weight_bytes, ffn.d_model

    def _get(self, key: tuple[str, int, int]) -> float:
        t = self._memo.get(key)
        if t is None:
            t = self._memo[key] = self._compute(*key)
        return t

    def _compute(self, what: str, tokens: int, degree: int) -> float:
        cost = self.cost
        flops = float(self._fpt * tokens)
        wbytes = float(self._wbytes)
        act = float(tokens * self._d * self.act_bytes)
        if what == "gpu":
            return cost.gpu_time(flops, wbytes + 2 * act)
        if what == "ndp":
            return cost.ndp_time(flops / degree, wbytes / degree + 2 * act)
        if what == "cpu":
            return cost.cpu_time(flops, wbytes + 2 * act)
        if what in ("fetch", "fetch_shard"):  # the shards are copied at once, in parallel
            return cost.copy_time("pcie.h2d", wbytes, degree)
        if what == "act_d2h":  # written into one unit's memory (all units: at once)
            return cost.link_time("pcie.d2h", act, 0)
        if what == "act_h2d":  # a unit's partial sum, read after the host syncs with the unit
            return cost.link_time("pcie.h2d", act, 0) + getattr(cost, "host_sync", 0.0)
        if what == "ndplink":
            return cost.link_time("ndplink", act)
        raise ValueError(what)

    def gpu(self, tokens: int) -> float:
        """Compute one whole expert on the GPU (weights read from VRAM)."""
        t = self._gpu.get(tokens)  # the hot look-ups keep their own tables (no key tuples)
        if t is None:
            t = self._gpu[tokens] = self._get(("gpu", tokens, 1))
        return t

    def ndp(self, tokens: int, degree: int) -> float:
        """Compute one shard (1/degree of the expert) on one NDP unit."""
        t = self._ndp.get((tokens, degree))
        if t is None:
            t = self._ndp[(tokens, degree)] = self._get(("ndp", tokens, degree))
        return t

    def cpu(self, tokens: int) -> float:
        """Compute one whole expert on the host CPU."""
        return self._get(("cpu", tokens, 1))

    def fetch(self, units: int = 0) -> float:
        """Copy one whole expert's weights to GPU memory over the host link, as the emitter
        charges it. `units` = the NDP units the weights are read from (the expert's TP degree):
        one transfer per shard, each capped by its DIMM's host-visible bandwidth, all at once
        and together capped by the link (so 1 unit = one capped copy). `units` = 0: the weights
        sit in plain host DRAM and the copy runs at link speed."""
        return self._get(("fetch", 0, max(int(units), 0)))

    def fetch_shard(self, degree: int) -> float:
        """Copy one shard (1/degree of the expert) from its NDP unit while the other shards go
        at once: how long that copy reads the unit's memory (with `exclusive_host_access` the
        unit can compute nothing else). Equal to `fetch(degree)`: all shards end together."""
        return self._get(("fetch_shard", 0, max(int(degree), 1)))

    def hold(self, degree: int) -> float:
        """Time each of an expert's `degree` units is blocked for NDP work while the expert is
        copied to the GPU: `fetch_shard(degree)` on targets whose NDP units exclude host access
        during compute (`ndp.exclusive_host_access`), else 0."""
        t = self._hold.get(degree)
        if t is None:
            t = self._hold[degree] = self.fetch_shard(degree) if self.exclusive else 0.0
        return t

    @property
    def exclusive(self) -> bool:
        """True when host copies and NDP compute on one unit exclude each other."""
        return self.cost.target.exclusive_host_access

    def act_down(self, tokens: int) -> float:
        """Send `tokens` activations (d_model each) from the GPU towards NDP units / host."""
        return self._get(("act_d2h", tokens, 1))

    def act_up(self, tokens: int) -> float:
        """Return `tokens` activation-sized partial sums to the GPU over the host link."""
        return self._get(("act_h2d", tokens, 1))

    def act_link(self, tokens: int) -> float:
        """Move `tokens` activation-sized partial sums between NDP units (inter-unit link)."""
        return self._get(("ndplink", tokens, 1))
