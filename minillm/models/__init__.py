"""Language models: n-gram, feed-forward, LSTM, GPT, BERT, encoder-decoder (see each module)."""
from .base import CONFIG_NAME, WEIGHTS_NAME, Config, PreTrainedModel, sample_next

__all__ = ["Config", "PreTrainedModel", "sample_next", "CONFIG_NAME", "WEIGHTS_NAME"]
