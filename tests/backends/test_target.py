"""Target files: the shipped ones load with a source on every value; bad files and overrides give
one clean error naming the key, the value and why."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ndpc.backends.target import (
    SCHEMA,
    TARGET_DIR,
    list_targets,
    load_target,
    parse_target,
    resource_names,
)
from ndpc.ir.diagnostics import NdpcError

SHIPPED = ["fiddler-l4", "fiddler-rtx6000", "h100-cxl-ndp", "orin-lpddr-ndp", "rtx4060ti-ndp",
           "rtx5080-ndp", "trimoe-h100-spr"]  # fmt: skip
GOOD = (TARGET_DIR / "rtx5080-ndp.toml").read_text()


def test_shipped_targets_load_with_sources():
    assert list_targets() == SHIPPED
    for name in SHIPPED:
        t = load_target(name)
        assert set(t.values) == set(t.sources)
        for key, src in t.sources.items():
            assert src.startswith(("source: http", "assumed: ")), (name, key, src)


def test_paper_target_contract_properties():
    t = load_target("rtx5080-ndp")
    assert t.ndp_units == 4 and t["ndp.min_units"] == 2 and t["ndp.max_units"] == 6
    assert t.gpu_memory_bytes == 16 * 2**30
    assert t.ndp_capacity_bytes == 32 * 2**30
    assert t.has_ndp_link and t.has_host_cpu and t.exclusive_host_access
    assert resource_names(t) == [
        "gpu",
        "cpu",
        "ndp0",
        "ndp1",
        "ndp2",
        "ndp3",
        "pcie.h2d",
        "pcie.d2h",
        "ndplink",
    ]
    assert resource_names(t.with_units(6))[2:8] == [f"ndp{i}" for i in range(6)]
    assert "ndplink" not in resource_names(load_target("orin-lpddr-ndp"))


def test_overrides_and_alias():
    t = load_target(
        "rtx5080-ndp", ["ndp.units=6", "link.pcie.gbps=32", "ndp.exclusive_host_access=false"]
    )
    assert t.ndp_units == 6
    assert t["link.pcie.h2d_gbps"] == t["link.pcie.d2h_gbps"] == 32.0
    assert t.sources["link.pcie.h2d_gbps"].startswith("override")
    assert not t.exclusive_host_access
    flat = load_target("rtx5080-ndp", ["gpu.mem_efficiency=0.5"])["gpu.mem_efficiency"]
    assert flat.fractions == (0.5,)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "ndp.units=7",
            "key 'ndp.units': value 7 must be between ndp.min_units=2 and ndp.max_units=6",
        ),
        ("ndp.units=1", "value 1 must be between"),
        ("ndp.unit=3", "unknown key 'ndp.unit'; did you mean 'ndp.units'?"),
        ("gpu.bandwidth_gbps=-5", "key 'gpu.bandwidth_gbps': value -5.0 must be > 0"),
        ("gpu.bandwidth_gbps=fast", "key 'gpu.bandwidth_gbps': value 'fast' must be a number"),
        ("ndp.units=2.5", "must be an integer"),
        ("ndp.exclusive_host_access=1", "must be true or false"),
        ("gpu.mem_efficiency=1.5", "every 'fraction' must be in [0.001, 1]"),
        ("link.pcie.kind=usb", "must be one of pcie, soc-dma"),
        ("novalue", "expected key=value"),
    ],
)
def test_bad_overrides(override, message):
    with pytest.raises(NdpcError) as err:
        load_target("rtx5080-ndp", [override])
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            ("bandwidth_gbps = {value = 960,", "bandwidth_gbps = {value = -1,"),
            "key 'gpu.bandwidth_gbps': value -1.0 must be > 0",
        ),
        (
            ("bandwidth_gbps = {value = 960, source", "bandwidth_gbps = {value = 960, sauce"),
            "key 'gpu.bandwidth_gbps'",
        ),
        (("[ndp]\n", '[ndp]\nfrobs = {value = 1, assumed = "x"}\n'), "unknown key 'ndp.frobs'"),
        (
            ("launch_us = {value = 5, assumed", 'launch_us = {value = 5, source = "", assumed'),
            "exactly one non-empty",
        ),
        (
            ("units = {value = 4,", "units = {value = 9,"),
            "key 'ndp.units': value 9 must be between",
        ),
        (("fraction = [0.10, 0.35,", "fraction = [0.35, 0.10,"), None),
        (("bytes = [4096, 65536,", "bytes = [65536, 4096,"), "must be strictly increasing"),
        (("bytes = [4096, 65536,", "bytes = [4096,"), "differ in length"),
        (('name = "rtx5080-ndp"', "name = 3"), "key 'name': value 3 must be a non-empty string"),
    ],
)
def test_bad_files_name_key_value_and_reason(edit, message, tmp_path):
    old, new = edit
    assert old in GOOD
    path = tmp_path / "t.toml"
    path.write_text(GOOD.replace(old, new, 1))
    if message is None:  # a legal edit: still loads
        load_target(str(path))
        return
    with pytest.raises(NdpcError) as err:
        load_target(str(path))
    text = str(err.value)
    assert text.startswith(f"{path}:") and message in text
    if "key '" in message:  # the line of the offending key is shown
        assert re.match(rf"{re.escape(str(path))}:\d+:\d+: error:", text)


def test_missing_key_and_toml_syntax(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text(re.sub(r"\nfp16_tflops = .*\n", "\n", GOOD, count=1))
    with pytest.raises(NdpcError, match="missing key 'gpu.fp16_tflops'"):
        load_target(str(path))
    path.write_text(GOOD.replace("[gpu]", "[gpu", 1))
    with pytest.raises(NdpcError) as err:
        load_target(str(path))
    assert re.match(rf"{re.escape(str(path))}:\d+:\d+: error: invalid TOML", str(err.value))


def test_unknown_target_suggests():
    with pytest.raises(NdpcError, match="did you mean 'rtx5080-ndp'"):
        load_target("rtx5080")


def test_every_schema_key_is_documented():
    doc = Path(__file__).resolve().parents[2] / "docs" / "targets.md"
    if not doc.exists():
        pytest.skip("docs/targets.md not written")
    text = doc.read_text()
    missing = [key for key in SCHEMA if f"`{key}`" not in text]
    assert not missing


_LINES = GOOD.splitlines(keepends=True)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.integers(0, len(_LINES) - 1), st.integers(0, 200), st.text(max_size=8)),
        min_size=1,
        max_size=4,
    )
)
def test_fuzz_loader_gives_only_clean_errors(edits):
    text = GOOD
    for line, col, insert in edits:
        lines = text.splitlines(keepends=True)
        line %= len(lines)
        row = lines[line]
        col %= len(row) + 1
        lines[line] = row[:col] + insert + row[col + len(insert) // 2 :]
        text = "".join(lines)
    try:
        parse_target(text, "fuzz.toml")
    except NdpcError as err:
        assert "fuzz.toml" in str(err)


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(sorted(SCHEMA)),
    st.one_of(
        st.integers(-10, 10**6), st.floats(allow_nan=True), st.text(max_size=6), st.booleans()
    ),
)
def test_fuzz_overrides_give_only_clean_errors(key, value):
    raw = repr(value) if not isinstance(value, str) else value
    try:
        load_target("rtx5080-ndp", [f"{key}={raw}"])
    except NdpcError as err:
        assert key in str(err) or "override" in str(err)
