"""The Python API: a checkpoint opened once, its facts, memory, findings and report; conversion
and diff. ``ckptkit`` re-exports these as ``ckptkit.open``, ``ckptkit.convert``, ``ckptkit.diff``.

Everything heavy is imported inside the functions, so ``import ckptkit`` stays cheap."""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .errors import CkptError

if TYPE_CHECKING:
    from .catalogue import FamilyMatch
    from .index import TensorIndex
    from .infer import Inference
    from .infer.fact import Fact
    from .infer.memory import Memory
    from .sources.base import Source
    from .tensordiff import DiffResult
    from .validate.findings import Finding, Validation
    from .validate.policy import Policy

#: ``progress(done_bytes, total_bytes)`` during a conversion
ByteProgress = Callable[[int, int], None]


class Checkpoint:
    """A checkpoint whose headers, config.json and tokenizer files have been read (no tensor
    data). Made by ``ckptkit.open``; every attribute is computed once."""

    def __init__(self, spec: str, source: Source, index: TensorIndex, index_file: str | None):
        self.spec = spec
        self._source = source              # reopened on use: it pins a Hub commit, holds no files
        self.index = index
        self._index_file = index_file
        self._inference: Inference | None = None

    def __repr__(self) -> str:
        return f"<Checkpoint {self.index.source} {self.index.format}, {len(self.index.tensors)} tensors>"

    @property
    def inference(self) -> Inference:
        """The facts and the family match, inferred on first use."""
        if self._inference is None:
            from .infer import infer
            self._inference = infer(self.index)
        return self._inference

    @property
    def facts(self) -> dict[str, Fact]:
        """{fact key: Fact} with each fact's ``value``, ``source`` and ``evidence``."""
        return self.inference.facts

    @property
    def family(self) -> FamilyMatch | None:
        """The catalogue family (and model, when its dimensions agree), or None."""
        return self.inference.family

    @property
    def tokenizer(self) -> dict[str, Any] | None:
        """The tokenizer fact's value (``model``, ``pre``, ``vocab_size``, BOS/EOS ids,
        ``chat_template``), or None when the checkpoint carries no tokenizer."""
        return self.inference.value("tokenizer")

    def memory(self, ctx: int, kv_type: str = "f16") -> Memory:
        """Weights plus the cache for one sequence of ``ctx`` tokens with the cache in
        ``kv_type`` (f16, bf16, q8_0, f32); ``inspect --ctx``'s figures."""
        from .infer.memory import estimate_memory, fact_values
        try:
            return estimate_memory(fact_values(self.facts), self.index.total_bytes, ctx, kv_type)
        except ValueError as e:
            raise CkptError(str(e)) from None

    def validation(self, policy: Policy | str | os.PathLike[str] | None = None) -> Validation:
        """Every check of ``ckptkit validate`` (with a Policy or the path of a policy file);
        ``to_json()`` is what ``validate --json`` prints."""
        from .validate import validate_index
        from .validate.policy import Policy, load_policy
        from .validate.tied import stored_head_is_copy
        pol = policy if isinstance(policy, Policy) or policy is None else load_policy(Path(policy))
        with self._source as source:
            files = source.files()
            head_copy = stored_head_is_copy(source, self.index, self.inference)
        v = validate_index(self.index, files=files, index_file=self._index_file, policy=pol,
                           repo_id=getattr(self._source, "repo_id", None), inference=self.inference,
                           head_copy=head_copy)
        v.root = self.spec if Path(self.spec).exists() else None
        return v

    def validate(self, policy: Policy | str | os.PathLike[str] | None = None) -> list[Finding]:
        """The findings of ``ckptkit validate`` (each with ``code``, ``level``, ``message``)."""
        return self.validation(policy).findings

    def report(self, ctx: int | None = None, kv_type: str = "f16") -> dict[str, Any]:
        """The report ``ckptkit inspect --json`` prints, as a dict (``json.dumps`` of it is that
        text); with ``ctx``, its ``memory`` too, as ``--ctx``. Keyed by ``schema_version``."""
        from .report import inspect_report
        report = inspect_report(self.index, self.inference)
        if ctx is not None:
            report["memory"] = self.memory(ctx, kv_type).to_json()
        return report


def open_checkpoint(src: str | os.PathLike[str], revision: str | None = None) -> Checkpoint:
    """Open ``src`` — a folder, a .safetensors or .gguf file, or a Hub repo (``org/name``,
    ``org/name@rev``, ``hf://org/name/sub``) — and read its headers. Exported as
    ``ckptkit.open``. Raises a CkptError subclass for input it cannot read (a shard index
    naming a missing shard too, which ``ckptkit validate`` reports as a finding)."""
    from .api import find_checkpoint_files, load_index, open_source
    spec = os.fspath(src)
    source = open_source(spec, revision)
    with source:
        index_file = find_checkpoint_files(source)[2]
        index = load_index(source, tokenizer=True)
    return Checkpoint(spec, source, index, index_file)


def convert(src: str | os.PathLike[str], dst: str | os.PathLike[str],
            to: Literal["gguf", "hf", "ckpt"] | None = None, outtype: str = "auto", revision: str | None = None,
            progress: ByteProgress | None = None, **options: Any) -> list[Path]:
    """Convert ``src`` to ``dst`` and return the files written. ``to``: "gguf" (one GGUF file),
    "hf" (a Hugging Face folder) or "ckpt" (the uniform layout: canonical names, manifest.json);
    None infers it as the CLI does (a .gguf ``dst`` is GGUF; a GGUF or ckpt source goes to HF, an
    HF source to GGUF). Sources: HF safetensors, GGUF, or a ckpt folder. ``outtype``: auto,
    f32, f16, bf16, q8_0 (GGUF only; to HF from GGUF auto is bf16, from safetensors it keeps
    the stored dtypes). ``progress(done_bytes, total_bytes)`` is called as tensor bytes are
    written. ``options`` go to ``ckptkit.conversion.convert_to_gguf``, ``convert_to_hf``,
    ``convert_to_ckpt`` or ``convert_ckpt_to_hf``."""
    from .conversion import (
        check_target,
        convert_ckpt_to_hf,
        convert_to_ckpt,
        convert_to_gguf,
        convert_to_hf,
        default_target,
        source_kind,
    )
    spec, out = os.fspath(src), os.fspath(dst)
    kind = source_kind(spec, revision)
    target = to or default_target(kind, out)
    check_target(kind, target, out, outtype)
    on_plan, on_bytes = _byte_progress(progress)
    if target == "ckpt":
        ck = convert_to_ckpt(spec, out, outtype, revision=revision, on_plan=on_plan, on_bytes=on_bytes, **options)
        return [ck.out_dir / f for f in ck.files] if ck.out_dir else []
    if target == "hf" and kind != "gguf":
        st = convert_ckpt_to_hf(spec, out, outtype, revision=revision, on_plan=on_plan, on_bytes=on_bytes,
                                **options)
        return [st.out_dir / f for f in st.files] if st.out_dir else []
    if target == "hf":
        hf = convert_to_hf(spec, out, "bf16" if outtype == "auto" else outtype, revision=revision,
                           on_plan=on_plan, on_bytes=on_bytes, **options)
        return [hf.out_dir / f for f in hf.files] if hf.out_dir else []
    return convert_to_gguf(spec, out, outtype=outtype, revision=revision, on_plan=on_plan,
                           on_bytes=on_bytes, **options).outputs


def _byte_progress(progress: ByteProgress | None) -> tuple[Callable[[Any], None] | None,
                                                           Callable[[int], None] | None]:
    """(on_plan, on_bytes) for the converters, turning byte increments into running totals."""
    if progress is None:
        return None, None
    state = {"done": 0, "total": 0}

    def on_plan(plan: Any) -> None:
        state["total"] = int(plan.nbytes)

    def on_bytes(n: int) -> None:
        state["done"] += n
        progress(state["done"], state["total"])

    return on_plan, on_bytes


def diff(a: str | os.PathLike[str], b: str | os.PathLike[str], atol: float = 0.0, rtol: float = 0.0,
         progress: Callable[[int, int], None] | None = None) -> DiffResult:
    """Compare the weights of checkpoints ``a`` and ``b`` (safetensors or GGUF: file, folder or
    Hub repo) tensor by tensor, each side's format transforms undone: ``ckptkit diff``.
    ``result.failed`` is True when they differ beyond ``atol + rtol * |a|``; ``to_json()`` is
    what ``diff --json`` prints. ``progress(done, total)`` counts tensor pairs compared."""
    from .tensordiff import diff as run
    return run(os.fspath(a), os.fspath(b), atol, rtol, progress=progress)
