"""Training, evaluation wiring, checkpointing and launch."""
