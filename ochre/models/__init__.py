"""Models: the VQ-VAE tokenizer (and, later, the dynamics model)."""
