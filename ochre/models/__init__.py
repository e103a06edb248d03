"""Models: the VQ-VAE tokenizer (and, later, the dynamics model)."""

from ochre.models.tokenizer import Tokenizer, TokenizerConfig, TokenizerOutput, TokenizerTrainConfig

__all__ = ["Tokenizer", "TokenizerConfig", "TokenizerOutput", "TokenizerTrainConfig"]
