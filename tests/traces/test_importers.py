"""Importers on small hand-written sources: the documented defect rules and bad-input messages."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ndpc.traces.errors import TraceError
from ndpc.traces.importers import detect_format, import_source


def topk_lines(counts: dict[tuple[int, int], int], k: int = 2) -> list[str]:
    lines = []
    for (prob, layer), n in sorted(counts.items()):
        for t in range(n):
            ex = [(t + layer + j) % 8 for j in range(k)]
            lines.append(
                json.dumps(
                    {
                        "problem_id": prob,
                        "layer": layer,
                        "experts": ex,
                        "gating_probs": [1 / k] * k,
                        "token_idx": t,
                    }
                )
            )
    return lines


def test_topk_uneven_layers_are_cut_and_reported(tmp_path: Path) -> None:
    src = tmp_path / "r.jsonl"
    src.write_text("\n".join(topk_lines({(0, 0): 5, (0, 1): 4, (1, 0): 3, (1, 1): 3})) + "\n")
    trace, report = import_source(src)
    assert trace.tokens == 4 + 3
    assert trace.request.tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert len(report.defects) == 1
    assert "problem 0: uneven per-layer token counts 4..5" in report.defects[0]
    assert "1 records dropped" in report.defects[0]
    assert trace.meta.params["import"]["defects"] == report.defects
    assert trace.experts[2, 1].tolist() == [3, 4]


def test_topk_fewer_choices_than_k(tmp_path: Path) -> None:
    src = tmp_path / "r.jsonl"
    lines = topk_lines({(0, 0): 3, (0, 1): 3}, k=2)
    rec = json.loads(lines[1])
    rec["experts"], rec["gating_probs"] = rec["experts"][:1], [1.0]
    lines[1] = json.dumps(rec)
    src.write_text("\n".join(lines))
    trace, report = import_source(src, k=2)
    assert trace.meta.k == 1
    assert any("records hold [1, 2] choices" in d for d in report.defects)
    assert any("model top-k is 2 but only 1" in d for d in report.defects)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: {**r, "experts": [1, 1]}, r"r.jsonl:3: expert chosen twice"),
        (
            lambda r: {k: v for k, v in r.items() if k != "token_idx"},
            r"r.jsonl:3: record lacks 'token_idx'",
        ),
        (
            lambda r: {**r, "gating_probs": [0.5]},
            r"r.jsonl:3: 'gating_probs' must hold one finite number",
        ),
        (
            lambda r: {**r, "layer": -1},
            r"r.jsonl:3: problem_id, layer and token_idx must be integers",
        ),
    ],
)
def test_topk_bad_records_name_the_line(tmp_path: Path, edit, message: str) -> None:
    lines = topk_lines({(0, 0): 3, (0, 1): 3})
    lines[2] = json.dumps(edit(json.loads(lines[2])))
    (tmp_path / "r.jsonl").write_text("\n".join(lines))
    with pytest.raises(TraceError, match=message):
        import_source(tmp_path / "r.jsonl", fmt="topk-jsonl")


def test_topk_experts_override_is_checked(tmp_path: Path) -> None:
    (tmp_path / "r.jsonl").write_text("\n".join(topk_lines({(0, 0): 3, (0, 1): 3})))
    with pytest.raises(TraceError, match="out of range for --experts 4"):
        import_source(tmp_path / "r.jsonl", experts=4)


def write_csv(path: Path, rows: list[list[float]], tokens: list[int] | None = None) -> None:
    head = "layer_id,token_id," + ",".join(f"expert_{e}" for e in range(len(rows[0])))
    ids = tokens or list(range(len(rows)))
    path.write_text(
        head
        + "\n"
        + "\n".join(f"0,{t}," + ",".join(str(v) for v in r) for t, r in zip(ids, rows, strict=True))
        + "\n"
    )


def test_flame_rows_with_fewer_choices_and_missing_tokens(tmp_path: Path) -> None:
    d = tmp_path / "flame"
    d.mkdir()
    write_csv(d / "layer2.csv", [[0.5, 0.2, 0, 0.1], [0, 0.3, 0.4, 0.2], [0.1, 0, 0.6, 0]])
    write_csv(d / "layer10.csv", [[0.1, 0.2, 0.3, 0], [0.3, 0.2, 0, 0]], tokens=[0, 1])
    trace, report = import_source(d)
    assert report.info["files"] == ["layer2.csv", "layer10.csv"]  # numeric order
    assert trace.tokens == 2 and trace.meta.k == 2
    assert trace.experts[0].tolist() == [[0, 1], [2, 1]]
    assert np.allclose(trace.weights[0, 0], [0.5, 0.2])
    assert any("keep the 2 token ids present in every layer" in x for x in report.defects)
    assert any("records hold [2, 3] choices" in x for x in report.defects)


def test_flame_bad_rows(tmp_path: Path) -> None:
    write_csv(tmp_path / "layer1.csv", [[0.5, 0.2], [0.1, float("nan")]])
    with pytest.raises(TraceError, match=r"layer1.csv:3: probabilities must be finite"):
        import_source(tmp_path / "layer1.csv")
    write_csv(tmp_path / "layer1.csv", [[0.5, 0.2], [0.0, 0.0]])
    with pytest.raises(TraceError, match=r"layer1.csv:3: row selects no expert"):
        import_source(tmp_path / "layer1.csv")
    (tmp_path / "layer1.csv").write_text("a,b\n1,2\n")
    with pytest.raises(TraceError, match=r"layer1.csv:1: header must be"):
        import_source(tmp_path / "layer1.csv")


def test_popularity_defects_and_errors(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps({"expert_popularity": [[2, 2, 1], [3, 1, 1]]}))
    pop, report = import_source(tmp_path / "a.json", k=2)
    assert pop.tokens == 2
    assert report.defects == ["layer-0 total 5 is not a multiple of k=2; rule: tokens rounded"]
    (tmp_path / "b.json").write_text(json.dumps({"expert_popularity": [[2, 2], [3, -1]]}))
    with pytest.raises(
        TraceError, match=r"b.json: expert_popularity\[1\]: layer 1: expected 2 integer counts"
    ):
        import_source(tmp_path / "b.json", k=2)


def test_detect_format_refuses_unknown(tmp_path: Path) -> None:
    (tmp_path / "x.jsonl").write_text(json.dumps({"hello": 1}) + "\n")
    with pytest.raises(TraceError, match="cannot tell the trace format"):
        detect_format(tmp_path / "x.jsonl")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TraceError, match="neither layer"):
        detect_format(tmp_path / "empty")


@pytest.mark.parametrize("fmt", ["topk-jsonl", "flame-csv", "popularity-json"])
def test_fuzzed_sources_fail_cleanly(tmp_path: Path, fmt: str) -> None:
    """Damaged sources import or raise a TraceError that names the file; nothing else."""
    if fmt == "topk-jsonl":
        src, text = tmp_path / "s.jsonl", "\n".join(topk_lines({(0, 0): 4, (0, 1): 4}))
    elif fmt == "flame-csv":
        src, text = (
            tmp_path / "layer1.csv",
            "layer_id,token_id,expert_0,expert_1,expert_2\n"
            + "".join(f"0,{i},0.5,0.{i + 1},0\n" for i in range(6)),
        )
    else:
        src, text = tmp_path / "p.json", json.dumps({"expert_popularity": [[1, 2, 3], [3, 2, 1]]})
    data = text.encode()
    rng = np.random.default_rng(1)
    for i in range(300):
        buf = bytearray(data)
        for pos in rng.integers(0, len(buf), size=int(rng.integers(1, 4))):
            buf[pos] = int(rng.integers(0, 256))
        src.write_bytes(bytes(buf[: int(rng.integers(0, len(buf)))] if i % 10 == 0 else buf))
        try:
            import_source(src, fmt=fmt, k=2)
        except TraceError as err:
            assert src.name in str(err)
