"""Tokenizer files <-> GGUF tokenizer metadata."""
from .to_gguf import *  # noqa: F403
from .to_gguf import PRETOKENIZERS_TOML  # noqa: F401
