"""Dataset registration, dataset mappers and the synthetic dataset."""
