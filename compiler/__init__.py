"""ndpc's compiler: ONNX front end, passes, pass manager and the command line."""

__version__ = "0.1.0"
