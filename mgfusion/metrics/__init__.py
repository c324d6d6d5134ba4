"""Label-free Structural Coherence (SC) and Edge Fidelity (EF) metrics. Depends on torch/numpy only."""
