"""Schedule format: builder rules, binary round trip (byte-identical), text form, bad files."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ndpc.backends.schedule import (
    COLUMNS,
    OpKind,
    Phase,
    Reason,
    ScheduleBuilder,
    load_schedule,
    save_schedule,
)
from ndpc.backends.schedule_text import parse_schedule, print_schedule
from ndpc.backends.simulator.synthetic import moe_schedule
from ndpc.ir.diagnostics import NdpcError

RES = ["gpu", "cpu", "ndp0", "ndp1", "pcie.h2d", "pcie.d2h"]


def small():
    b = ScheduleBuilder(RES, {"prefetcher": "none", "policy": "test"})
    a = b.add(
        OpKind.GPU_KERNEL,
        b.resource("gpu"),
        flops=1e6,
        mem_bytes=2048.0,
        token=0,
        layer=0,
        reason=Reason.DENSE,
    )
    t = b.add(
        OpKind.TRANSFER, b.resource("pcie.d2h"), link_bytes=4096.0, deps=[a], token=0, layer=0
    )
    k0 = b.add(
        OpKind.NDP_KERNEL,
        b.resource("ndp0"),
        flops=10.0,
        mem_bytes=1e6,
        deps=[t],
        expert=3,
        shard=0,
        unit=0,
    )
    k1 = b.add(
        OpKind.NDP_KERNEL,
        b.resource("ndp1"),
        flops=10.0,
        mem_bytes=1e6,
        deps=[t],
        expert=3,
        shard=1,
        unit=1,
    )
    b.add(
        OpKind.SYNC,
        b.resource("gpu"),
        deps=[k0, k1],
        phase=Phase.PREFILL,
        request=2,
        reason=Reason.COMBINE,
    )
    return b.build()


GOLDEN = """\
# ndpc schedule v1
resources gpu cpu ndp0 ndp1 pcie.h2d pcie.d2h
meta {"policy": "test", "prefetcher": "none"}
%0 = gpu_kernel @gpu flops=1000000.0 mem=2048.0 token=0 layer=0 reason=dense
%1 = transfer @pcie.d2h link=4096.0 deps=%0 token=0 layer=0
%2 = ndp_kernel @ndp0 flops=10.0 mem=1000000.0 deps=%1 expert=3 shard=0 unit=0
%3 = ndp_kernel @ndp1 flops=10.0 mem=1000000.0 deps=%1 expert=3 shard=1 unit=1
%4 = sync @gpu deps=%2,%3 phase=prefill request=2 reason=combine
"""


def test_text_form_golden_and_round_trip():
    s = small()
    assert print_schedule(s) == GOLDEN
    assert print_schedule(parse_schedule(GOLDEN)) == GOLDEN


def test_builder_rejects_bad_ops():
    b = ScheduleBuilder(RES)
    with pytest.raises(ValueError, match="earlier op ids"):
        b.add(OpKind.GPU_KERNEL, 0, deps=[0])
    with pytest.raises(ValueError, match="out of range"):
        b.add(OpKind.GPU_KERNEL, 99)
    with pytest.raises(ValueError, match="unknown resource"):
        b.resource("tpu")


def test_binary_round_trip_is_exact_and_deterministic(tmp_path):
    s = moe_schedule(layers=3, decode=4, prompt=8, experts=16, k=4)
    a, b = tmp_path / "a.ndpsched", tmp_path / "b.ndpsched"
    save_schedule(s, a)
    save_schedule(moe_schedule(layers=3, decode=4, prompt=8, experts=16, k=4), b)
    assert a.read_bytes() == b.read_bytes()
    t = load_schedule(a)
    assert t.resources == s.resources and t.meta == s.meta and len(t) == len(s)
    for name, _, _ in COLUMNS:
        assert np.array_equal(t.column(name), s.column(name)), name
    assert np.array_equal(t.dep_ptr, s.dep_ptr) and np.array_equal(t.dep_idx, s.dep_idx)
    save_schedule(t, b)
    assert a.read_bytes() == b.read_bytes()


def test_bad_files(tmp_path):
    good = tmp_path / "g.ndpsched"
    save_schedule(small(), good)
    data = good.read_bytes()
    cases = {
        "magic": (b"XXXXXXXX" + data[8:], "bad magic"),
        "version": (data[:8] + (7).to_bytes(4, "little") + data[12:], "version 7 is not supported"),
        "truncated": (data[: len(data) - 40], "does not fit the file"),
        "header": (data[:16] + b"[" + data[17:], "corrupt schedule header"),
    }
    for name, (blob, message) in cases.items():
        path = tmp_path / f"{name}.ndpsched"
        path.write_bytes(blob)
        with pytest.raises(NdpcError) as err:
            load_schedule(path)
        assert message in str(err.value) and str(path) in str(err.value), name
    with pytest.raises(NdpcError, match="cannot read schedule"):
        load_schedule(tmp_path / "missing.ndpsched")


def test_forward_dependency_in_file_is_rejected(tmp_path):
    path = tmp_path / "s.ndpsched"
    save_schedule(small(), path)
    data = bytearray(path.read_bytes())
    # the last column is dep_idx (int32, padded to 8 bytes): point op 1's dependency at op 4
    s = small()
    at = len(data) - (4 * len(s.dep_idx) + (-4 * len(s.dep_idx)) % 8)
    data[at : at + 4] = np.int32(4).tobytes()
    path.write_bytes(bytes(data))
    with pytest.raises(NdpcError, match="op 1: dependency 4 is not an earlier op"):
        load_schedule(path)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("%0 = warp_kernel @gpu", "unknown op kind 'warp_kernel'"),
        ("%0 = gpu_kernel @tpu", "unknown resource 'tpu'"),
        ("%0 = gpu_kernel @gpu flops=lots", "bad value 'lots' for 'flops'"),
        ("%0 = gpu_kernel @gpu deps=%0", "dependencies must be earlier ops"),
        ("%1 = gpu_kernel @gpu", "expected '%0 = KIND @RESOURCE"),
        ("%0 = gpu_kernel @gpu colour=red", "unknown field 'colour'"),
    ],
)
def test_text_errors_name_line_and_column(line, message):
    text = "resources gpu cpu\n" + line + "\n"
    with pytest.raises(NdpcError) as err:
        parse_schedule(text, "x.txt")
    assert str(err.value).startswith("x.txt:2:") and message in str(err.value)


@settings(max_examples=80, deadline=None)
@given(
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=6)
)
def test_fuzz_binary_loader_gives_only_clean_errors(flips, tmp_path_factory):
    path = tmp_path_factory.mktemp("fz") / "s.ndpsched"
    save_schedule(small(), path)
    data = bytearray(path.read_bytes())
    for pos, value in flips:
        data[pos % len(data)] = value
    path.write_bytes(bytes(data))
    try:
        load_schedule(path)
    except NdpcError as err:
        assert str(path) in str(err)


@pytest.mark.parametrize("seed", range(3))
def test_builder_columns_grow_and_compact_anywhere(seed, monkeypatch):
    """Ops moved into the columns at irregular points, with the columns outgrown many times
    over (tiny chunk and first room): every column and the dependencies hold what was added,
    and `rows_since` reads the rows not yet moved. (Fails if a growth step drops rows already
    moved, or a column is written at the wrong offset.)"""
    import ndpc.backends.schedule as sched

    monkeypatch.setattr(sched, "_MIN_ROOM", 4)
    monkeypatch.setattr(ScheduleBuilder, "CHUNK", 3)
    rng = np.random.default_rng(seed)
    b = ScheduleBuilder(("gpu", "ndp0", "pcie.h2d"))
    added, deps = [], []
    for i in range(700):
        d = sorted(set(rng.integers(0, i, size=rng.integers(0, 4)).tolist())) if i else []
        row = dict(kind=int(rng.integers(0, 7)), resource=int(rng.integers(0, 3)),
                   flops=float(rng.uniform(0, 1e9)), mem_bytes=float(rng.integers(0, 1 << 20)),
                   link_bytes=float(rng.uniform(0, 1e6)), phase=int(rng.integers(0, 2)),
                   request=int(rng.integers(0, 5)), token=int(rng.integers(-1, 9)),
                   layer=int(rng.integers(-1, 4)), expert=int(rng.integers(-1, 8)),
                   shard=int(rng.integers(-1, 4)), unit=int(rng.integers(-1, 2)),
                   reason=int(rng.integers(0, 13)))  # fmt: skip
        added.append(row)
        deps.append(d)
        b.add(deps=d, **row)
        pending = len(b._pending())
        if pending and rng.random() < 0.2:
            lo = b.n - int(rng.integers(1, pending + 1))
            kind, res, *_, ptr, got = b.rows_since(lo)
            assert kind.tolist() == [r["kind"] for r in added[lo:]]
            assert got.tolist() == [x for e in deps[lo:] for x in e]
    s = b.build()
    for name, _, _ in COLUMNS:
        assert s.column(name).tolist() == [r[name] for r in added], name
    assert s.dep_idx.tolist() == [x for e in deps for x in e]
    assert np.diff(s.dep_ptr).tolist() == [len(e) for e in deps]
