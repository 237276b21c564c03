"""Experiments: many (model, target, units, policy) runs, their tables, plots and JSON.

`runner` compiles and simulates one case per policy; `workload` prepares traces (evaluation and
Fiddler's calibration); `tables` and `plots` render results; `paper` reproduces the evaluation of
arXiv 2601.03992 (`ndpc reproduce paper`).
"""
