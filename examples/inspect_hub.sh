#!/usr/bin/env bash
# Shows: inspecting a Hugging Face Hub repo from its headers alone, without downloading weights.
#
#   examples/inspect_hub.sh [REPO[@REVISION]] [CONTEXT_TOKENS]
#
# ckptkit reads config.json, the shard index and each safetensors header (a few kB per shard,
# by HTTP range requests), so a 16 GB or a 1.3 TB repo takes the same few seconds. It honours
# HF_TOKEN (gated or private repos), HF_ENDPOINT (a mirror) and HF_HUB_OFFLINE (the local cache).
set -euo pipefail

repo="${1:-meta-llama/Meta-Llama-3-8B}"
ctx="${2:-8192}"

# 1. What the repo holds: format, shards, parameters, dtypes, the tensors collapsed by
#    pattern, and the architecture read from the tensor shapes, each fact with its evidence.
ckptkit inspect "$repo" --no-progress

# 2. Memory to run it: the weights plus the KV cache at $ctx tokens of context.
ckptkit inspect "$repo" --no-progress --ctx "$ctx" --kv-type q8_0 | grep -E '^ +memory '

# 3. The same facts as JSON, for scripts.
ckptkit inspect "$repo" --no-progress --json | python3 -c '
import json, sys
r = json.load(sys.stdin)
facts = {k: f["value"] for k, f in r["facts"].items()}
print("family:", (r.get("family") or {}).get("model") or (r.get("family") or {}).get("title"))
for key in ("num_layers", "hidden_size", "attention", "num_attention_heads", "num_key_value_heads"):
    print(f"{key}: {facts.get(key)}")
'
