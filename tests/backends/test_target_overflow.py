"""An integer beyond float range in a float key is a message, not an OverflowError."""

from __future__ import annotations

import pytest

from ndpc.backends.target import load_target
from ndpc.ir.diagnostics import NdpcError


def test_huge_integer_override_is_refused_with_a_message():
    with pytest.raises(NdpcError, match=r"link\.pcie\.h2d_gbps"):
        load_target("rtx5080-ndp", ["link.pcie.gbps=" + "9" * 400])
