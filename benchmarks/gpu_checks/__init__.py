"""The parts of ``benchmarks/gpu_check.py``: shared plumbing (``common``), the correctness checks
(``correctness``), the speed measurements (``speed``) and the fp16 pixel-decoder study (``study``)."""
