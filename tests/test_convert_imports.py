"""The converter package's import boundaries: what inspect needs from it stays light, and the
names callers import from its modules keep resolving."""
import subprocess
import sys

import pytest


def _loaded_after(code: str) -> set[str]:
    probe = code + "; import sys; print(); print(' '.join(m for m in ('numpy', 'gguf') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return set(out.splitlines()[-1].split())


def test_tokenizer_facts_import_neither_numpy_nor_gguf():
    # inspect names the pre-tokenizer through these; numpy and gguf cost it a third of a second
    code = ("from ckptkit.infer.tokenizer import infer_tokenizer;"
            "from ckptkit.conversion.tokenizer.pretokenizer import identify_pre;"
            "import ckptkit.conversion, ckptkit.conversion.tokenizer;"
            "print(identify_pre({'pre_tokenizer': {'type': 'ByteLevel', 'add_prefix_space': False,"
            " 'trim_offsets': True, 'use_regex': True}}))")
    assert _loaded_after(code) == set()


def test_a_conversion_loads_gguf_py_only_to_quantize():
    assert _loaded_after("from ckptkit.conversion.run import execute") == {"numpy"}
    f16 = "import numpy as np; from ckptkit.conversion.run import encode; encode(np.ones(64), 1, 32)"
    assert _loaded_after(f16) == {"numpy"}
    q8_0 = "import numpy as np; from ckptkit.conversion.run import encode; encode(np.ones(64), 8, 32)"
    assert _loaded_after(q8_0) == {"numpy", "gguf"}


@pytest.mark.parametrize("module, names", [
    ("ckptkit.conversion.tokenizer", "BYTE CONTROL NORMAL UNKNOWN UNUSED USER_DEFINED PRETOKENIZERS_TOML bytes_to_token "
     "has_tokenizer identify_pre is_sentencepiece_style parse_sentencepiece replay_merges tokenizer_kvs"),
    ("ckptkit.conversion.to_hf", "convert_to_hf encode unpermute_rope refuse_plan build_config metadata_names "
     "pick_target gguf_matrix plan_hf piece_arrays tokenizer_files OPS HFResult"),
    ("ckptkit.conversion", "build_plan convert_to_gguf convert_to_hf parse_size source_is_gguf"),
])
def test_names_callers_import_resolve(module, names):
    import importlib
    mod = importlib.import_module(module)
    assert [n for n in names.split() if not hasattr(mod, n)] == []
