#!/usr/bin/env bash
# Shows: converting a Hugging Face checkpoint (folder or Hub repo) to GGUF and running it with llama.cpp.
#
#   examples/convert_for_llama_cpp.sh [SRC] [OUT.gguf] [OUTTYPE]
#
# SRC defaults to the tiny example model next to this script; a Hub repo id (Qwen/Qwen3-0.6B)
# is streamed: tensor bytes are read once by ranged requests and written as they arrive, with
# no copy of the repo on disk. OUTTYPE is auto (keep 16-bit as it is), f32, f16, bf16 or q8_0.
# Set RUN=0 to stop after the conversion.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
src="${1:-$here/tiny-llama}"
out="${2:-tiny-llama.gguf}"
outtype="${3:-q8_0}"

# 1. The plan first: every metadata key, and every GGUF tensor with its source tensor and the
#    ops applied to it (q/k rows re-ordered for llama.cpp's rope, ...). Nothing is written.
#    Shown here: the family line and the first tensors (awk reads on, so ckptkit is not cut off).
ckptkit convert "$src" "$out" --outtype "$outtype" --dry-run --no-progress |
    grep -E '^family|<-' | awk 'NR <= 8'

# 2. Convert. The output is written to a temporary file and renamed when complete.
ckptkit convert "$src" "$out" --outtype "$outtype" --no-progress

# 3. Check what was written: the GGUF's own metadata against its tensors.
ckptkit validate "$out"

[ "${RUN:-1}" = 0 ] && exit 0

# 4. Run it: llama.cpp's own tools when installed (llama-completion in current builds; older
#    ones have only llama-cli, where -no-cnv keeps it from waiting for chat input), else
#    llama-cpp-python (pip install llama-cpp-python).
prompt="Once upon a time"
if command -v llama-completion >/dev/null 2>&1; then
    llama-completion -m "$out" -p "$prompt" -n 16 --temp 0 -no-cnv </dev/null
elif command -v llama-cli >/dev/null 2>&1; then
    llama-cli -m "$out" -p "$prompt" -n 16 --temp 0 -no-cnv </dev/null
else
    python3 - "$out" "$prompt" <<'PY'
import sys

from llama_cpp import Llama

llm = Llama(model_path=sys.argv[1], n_ctx=256, verbose=False)
out = llm(sys.argv[2], max_tokens=16, temperature=0.0)
print(f"llama.cpp generated {out['usage']['completion_tokens']} tokens:", repr(out["choices"][0]["text"]))
PY
fi
