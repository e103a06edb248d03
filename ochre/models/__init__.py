"""Models: the VQ-VAE tokenizer and the FiLM-ConvGRU dynamics model."""

from ochre.models.dynamics import Dynamics, DynamicsConfig
from ochre.models.tokenizer import Tokenizer, TokenizerConfig, TokenizerOutput, TokenizerTrainConfig

__all__ = ["Dynamics", "DynamicsConfig", "Tokenizer", "TokenizerConfig", "TokenizerOutput", "TokenizerTrainConfig"]
