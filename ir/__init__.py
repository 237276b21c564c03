"""ndpc's IR: types, attributes, ops, modules, printer, parser and verifier (no ONNX, no time)."""
