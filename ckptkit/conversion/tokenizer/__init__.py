"""Tokenizers: a checkpoint's tokenizer files -> GGUF ``tokenizer.*`` metadata (to_gguf).

Three inputs are understood:
- HF ``tokenizer.json`` with a byte-level BPE model -> ``tokenizer.ggml.model = "gpt2"`` (bpe),
  with the pre-tokenizer named from its definition (pretokenizer, ``mappings/pretokenizers.toml``);
- SentencePiece: ``tokenizer.model`` (protobuf) or a ``tokenizer.json`` whose model is Unigram or
  a byte-fallback/Metaspace BPE -> ``"llama"`` with scores (sentencepiece);
- tiktoken ranks (``tiktoken.model``, Kimi K2) -> ``"gpt2"`` with merges replayed from the ranks
  (tiktoken).
"""
from .pretokenizer import PRETOKENIZERS_TOML, check_pre_name, identify_pre, is_sentencepiece_style, pre_names
from .sentencepiece import SpmModel, parse_sentencepiece
from .tiktoken import bytes_to_token, parse_tiktoken, replay_merges
from .to_gguf import chat_template_kvs, has_tokenizer, special_tokens, tokenizer_kvs
from .vocab import BYTE, CONTROL, NORMAL, UNKNOWN, UNUSED, USER_DEFINED, Vocab, looks_special

__all__ = [
    "BYTE", "CONTROL", "NORMAL", "PRETOKENIZERS_TOML", "UNKNOWN", "UNUSED", "USER_DEFINED", "SpmModel", "Vocab",
    "bytes_to_token", "chat_template_kvs", "check_pre_name", "has_tokenizer", "identify_pre",
    "is_sentencepiece_style", "looks_special", "parse_sentencepiece", "parse_tiktoken", "pre_names",
    "replay_merges", "special_tokens", "tokenizer_kvs",
]
