"""`ckptkit validate`: audit a checkpoint for CI.

Every problem is a ``Finding`` with a stable ``code`` (see ``CODES``), a level (``error`` or
``warning``) and a message. Five groups of checks, each a small pure function of the tensor
index and its inferred facts, one module each:

- ``config.*`` (``config``, ``attention``, ``ffn``): config.json (or GGUF metadata) against what
  the tensors show;
- ``structure.*`` (``structure``): every layer holds the tensors its kind needs, in agreeing
  shapes, experts numbered 0..E-1, nothing stray or duplicated;
- ``index.*`` (``shards``): the shard index against the shards;
- ``catalogue.*`` (``catalogue``): a checkpoint claiming a known model against its published facts;
- ``tokenizer.*`` (``tokenizer``): the tokenizer against the embedding rows, and its chat template;
plus ``policy.*`` from a policy file (``policy``). Findings and their codes are in ``findings``,
which depends on nothing else here; ``render`` formats a ``Validation`` for output.
"""
from __future__ import annotations

import time
from pathlib import Path

from ..index import TensorIndex
from ..infer import Inference, infer
from ..infer.scan import scan
from ..sources.files import SHARD_INDEX
from .catalogue import check_catalogue
from .config import check_config
from .findings import CODES, LEVELS, MAX_PER_CODE, Finding, Validation, cap, finding
from .layout import Layout
from .policy import Policy, check_policy, load_policy
from .render import format_github, format_text
from .shards import check_shard_index, missing_shards
from .structure import check_structure
from .tied import stored_head_is_copy
from .tokenizer import check_tokenizer

__all__ = ["validate", "validate_index", "Validation", "Finding", "CODES", "LEVELS", "MAX_PER_CODE",
           "finding", "cap", "format_text", "format_github", "Policy", "load_policy", "check_policy",
           "missing_shards"]


def validate(spec: str, revision: str | None = None, policy: Policy | None = None) -> Validation:
    """Open ``spec`` (folder, file or Hub repo), read its headers and run every check.

    Raises CkptError for input that cannot be read at all (exit 2 in the CLI)."""
    from ..api import find_checkpoint_files, load_index, open_source, read_json
    t0 = time.process_time()
    with open_source(spec, revision) as source:
        files = source.files()
        fmt, _, index_file = find_checkpoint_files(source)
        root = spec if Path(spec).exists() else None      # local: annotations can name files
        if index_file:
            missing = missing_shards(read_json(source, index_file), index_file, files)
            if missing:      # the headers cannot all be read: report what is known and stop
                v = Validation(source.label, fmt, missing, files=len(files), root=root)
                v.seconds = time.process_time() - t0
                return v
        index = load_index(source, tokenizer=True)
        repo = getattr(source, "repo_id", None)
        inf = infer(index)
        head_copy = stored_head_is_copy(source, index, inf)
    v = validate_index(index, files=files, index_file=index_file, policy=policy, repo_id=repo,
                       inference=inf, head_copy=head_copy)
    v.root = root
    v.seconds = time.process_time() - t0
    return v


def validate_index(index: TensorIndex, files: dict[str, int | None] | None = None,
                   index_file: str | None = None, policy: Policy | None = None,
                   repo_id: str | None = None, inference: Inference | None = None,
                   head_copy: bool | None = None) -> Validation:
    """Every check on an already-read index. ``files`` is the source's file listing (for stray
    shards and policy checks); ``repo_id`` the Hub repo it came from (a claim of a model);
    ``inference`` the facts already inferred from ``index``, whose scan the checks reuse;
    ``head_copy`` whether a stored head config.json ties to the embedding holds the same bytes
    (``tied.stored_head_is_copy``; None: not compared)."""
    inf = inference or infer(index)
    layout = Layout.of(index, inf.scan if inf.scan is not None else scan(index))
    out: list[Finding] = []
    vocab_only = index.format == "gguf" and not index.tensors and "tokenizer.ggml.model" in index.metadata
    if not vocab_only:  # a vocabulary-only GGUF has no weights for its metadata to describe
        out += check_config(index, inf, layout, head_copy)
        out += check_structure(index, inf, layout)
    if index.shard_index is not None:
        out += check_shard_index(index, index_file or SHARD_INDEX, files)
    if not vocab_only:
        out += check_catalogue(index, inf, repo_id)
    out += check_tokenizer(index, inf)
    if policy is not None:
        out += check_policy(policy, index, inf, files)
        out = policy.adjust(out)
    return Validation(index.source, index.format, cap(out), inf.family, len(index.tensors),
                      len(index.files), fail_on=policy.fail_on if policy is not None else None)
