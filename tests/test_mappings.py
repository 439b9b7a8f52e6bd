"""The mapping data: every file in mappings/ loads through the checked loader, and a broken
copy of any rule (unknown key or section, wrong type, bad expression, unknown role, failing
expression) is refused with one line naming the file and the key."""
from __future__ import annotations

import ast
import tomllib
from importlib.resources import files
from pathlib import Path

import pytest

from ckptkit import mapdata
from ckptkit.conversion.plan import metadata_kvs
from ckptkit.expr import Expr, ExprError, compile_expr, evaluate
from ckptkit.mapdata import MappingError

REPO = Path(__file__).resolve().parents[1]


def _copy(src, dst: Path) -> None:
    dst.mkdir()
    for f in src.iterdir():
        if f.is_dir() and f.name != "__pycache__":
            _copy(f, dst / f.name)
        elif f.name.endswith(".toml"):
            (dst / f.name).write_text(f.read_text(encoding="utf-8"), encoding="utf-8")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A private copy of the packaged mapping data, to break."""
    _copy(files("ckptkit.mappings"), tmp_path / "mappings")
    return tmp_path / "mappings"


def _edit(root: Path, rel: str, old: str, new: str) -> None:
    p = root / rel
    text = p.read_text()
    assert old in text, (rel, old)
    p.write_text(text.replace(old, new, 1))


def _refused(root: Path, *parts: str) -> str:
    with pytest.raises(MappingError) as e:
        mapdata.load_all(root)
    msg = str(e.value)
    assert "\n" not in msg
    for p in parts:
        assert p in msg, (p, msg)
    return msg


# ---- the shipped data ------------------------------------------------------------------------------

def test_every_mapping_file_loads_and_is_read():
    data = mapdata.load_all()
    src = files("ckptkit.mappings")
    convert = [f.name for f in (src / "convert").iterdir() if f.name.endswith(".toml")]
    families = [f.name for f in (src / "families").iterdir() if f.name.endswith(".toml")]
    tops = sorted(f.name for f in src.iterdir() if f.name.endswith(".toml"))
    assert sorted(mapdata.TOP_FILES) == tops
    assert len(data.convert_families) == len(convert) - 1       # _common.toml is merged in
    assert len(data.catalogue_families) == len(families)
    assert data.known_models and data.hf_targets and data.pretokenizers.entries
    assert data.config_keys["num_experts_per_tok"].gguf == ("expert_used_count",)
    assert data.validate.required["moe"][0] == ("ffn_gate_inp.weight",)


def test_loaded_objects_are_frozen_and_typed():
    fam = mapdata.convert_families()["llama"]
    with pytest.raises(AttributeError):
        fam.arch = "x"                                   # type: ignore[misc]
    with pytest.raises(TypeError):
        fam.metadata["x"] = None                         # type: ignore[index]
    meta = fam.metadata["{arch}.rope.freq_base"]
    assert meta.type == "f32" and isinstance(meta.expr, Expr)
    assert isinstance(meta.expr.node, ast.expr)          # parsed at load, not at evaluation
    assert all(isinstance(e, Expr) for e, _ in mapdata.convert_families()["gemma3"].checks)
    model = next(m for m in mapdata.known_models() if m.name == "GPT-2")
    assert model.num_layers == 12 and model["num_layers"] == 12 and "kv_lora_rank" not in model


def test_every_expression_is_parsed_at_load():
    """No expression text survives to evaluation time: each is an Expr holding its AST."""
    for fam in mapdata.convert_families().values():
        exprs = [m.expr for m in fam.metadata.values()] + [e for e, _ in fam.checks]
        exprs += [a for ops in fam.transforms.values() for op in ops for a in op.args if isinstance(a, Expr)]
        exprs += [e for sp in fam.splits for e in sp.exprs()]
        exprs += [e for g in fam.generate for e in (g.when, g.shape)]
        assert exprs and all(isinstance(e, Expr) and isinstance(e.node, ast.AST) for e in exprs), fam.name
    for t in mapdata.hf_targets():
        assert all(isinstance(k.expr, Expr) for k in t.config.values())


def test_roles_named_by_conversion_tables_exist():
    roles = mapdata.roles()
    for fam in mapdata.convert_families().values():
        named = set(fam.transforms) | set(fam.renames) | set(fam.renames.values()) | fam.f32_roles
        named |= {r for sp in fam.splits for r in (sp.from_role, sp.to_role)} | {g.to for g in fam.generate}
        assert named <= roles.known, (fam.name, named - roles.known)
    # roles only GGUF has are declared, not guessed
    assert {"attn_k_b.weight", "rope_freqs.weight"} <= roles.gguf_only


def test_role_groups_have_one_home():
    g = mapdata.roles().groups
    assert g["routed_experts"].matches("ffn_down_exps.blocks") and g["routed_experts"].matches("ffn_up_exps.weight")
    assert not g["routed_experts"].matches("ffn_up.weight") and not g["router"].matches("ffn_gate.weight")
    assert g["router"].weights() == ("ffn_gate_inp.weight",)


def test_packaging_ships_every_mapping_file_and_package():
    """pyproject lists packages by hand (mappings/ is mapped to ckptkit.mappings): a new
    subpackage or data folder must be added there, or the wheel silently lacks it."""
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    pkgs = {".".join(p.relative_to(REPO).parts) for p in (REPO / "ckptkit").rglob("__init__.py")
            for p in [p.parent]}
    assert pkgs <= set(cfg["packages"]), pkgs - set(cfg["packages"])
    assert cfg["package-dir"]["ckptkit.mappings"] == "mappings"
    globs = cfg["package-data"]["ckptkit.mappings"]
    shipped = {p for g in globs for p in (REPO / "mappings").glob(g)}
    assert shipped == set((REPO / "mappings").rglob("*.toml"))


# ---- broken copies are refused -----------------------------------------------------------------------

def test_misspelled_section_is_refused(root):
    _edit(root, "convert/llama.toml", "[metadata]", "[metadatta]")
    msg = _refused(root, "mappings/convert/llama.toml", "[metadatta]", "unknown section")
    assert msg == "mappings/convert/llama.toml: [metadatta]: unknown section"


def test_unknown_key_is_refused(root):
    _edit(root, "convert/deepseek2.toml", 'mtp_from_layer = "num_hidden_layers"', 'mtp_from_layr = "num_hidden_layers"')
    _refused(root, "mappings/convert/deepseek2.toml", "[options] mtp_from_layr", "unknown key")


def test_unknown_key_in_a_model_row_is_refused(root):
    _edit(root, "models.toml", "params_total = 0.124", "params_totl = 0.124")
    _refused(root, "mappings/models.toml", "[[model]] #1 params_totl", "unknown key")


def test_unknown_pretokenizer_step_key_is_refused(root):
    _edit(root, "pretokenizers.toml", 'use_regex = true }', 'use_regexp = true }')
    _refused(root, "mappings/pretokenizers.toml", "steps #1", "use_regexp")


WRONG_TYPES = [
    ("families/llama.toml", 'gguf_arch = "llama"', "gguf_arch = 3", ("gguf_arch", "must be a string")),
    ("models.toml", "num_layers = 12", 'num_layers = "12"', ("[[model]] #1 num_layers", "must be an integer")),
    ("validate.toml", "num_layers = 1024", "num_layers = -1", ("[limits] num_layers", "positive integer")),
    ("convert/_common.toml", 'keys = ["{arch}.block_count"', 'keys = [3, "{arch}.block_count"',
     ("[required] keys", "must be a string")),
    ("convert/llama.toml", '"attn_q.weight" = [["permute_rope", "num_attention_heads"]]',
     '"attn_q.weight" = "permute_rope"', ("[transforms] 'attn_q.weight'", "list of ops")),
]
# expressions are parsed when the file loads, not when a model first uses them
BAD_EXPRESSIONS = [
    ("convert/_common.toml", '"{arch}.block_count" = "num_hidden_layers"',
     '"{arch}.block_count" = "num_hidden_layers +"',
     ("[metadata] '{arch}.block_count'", "bad expression")),
    ("hf_configs.toml", 'vocab_size = "n_vocab"', 'vocab_size = "n_vocab.real"',
     ("[common] [config] vocab_size", "Attribute is not allowed")),
    ("convert/gemma3.toml", '"not use_bidirectional_attention"', '"open(use_bidirectional_attention)"',
     ("[checks]", "may be called")),
    ("convert/llama4.toml", 'shape = "[src_shape[0], src_shape[2] // 2, src_shape[1]]"',
     'shape = "[src_shape[0], src_shape[2] // 2 src_shape[1]]"', ("[[split]] #1 shape", "bad expression")),
]
UNKNOWN_ROLES = [
    ("convert/gemma3.toml", '"post_ffw_norm.weight" = [["add", 1.0]]',
     '"post_ffn_norm.weight" = [["add", 1.0]]',
     ("[transforms] 'post_ffn_norm.weight'", "unknown role")),
    ("convert/deepseek2.toml", 'to = "attn_k_b.weight"', 'to = "attn_kb.weight"', ("[[split]] #1 to", "attn_kb.weight")),
    ("convert/glm4moe.toml", '"ffn_norm.weight" = "post_attention_norm.weight"',
     '"ffn_norm.weight" = "post_attn_norm.weight"', ("[renames] 'ffn_norm.weight'", "unknown role")),
    ("convert/llama.toml", 'to = "rope_freqs.weight"', 'to = "rope_freq.weight"',
     ("[options] [[generate]] #1 to", "unknown role")),
    ("convert/_common.toml", '"ffn_gate_inp.weight", "exp_probs_b.bias"', '"ffn_gate_inp.weight", "exp_prob_b.bias"',
     ("[dtypes] f32", "exp_prob_b.bias")),
    ("hf_configs.toml", '"output.weight" = "lm_head.weight"', '"outputs.weight" = "lm_head.weight"',
     ("[common] [names] 'outputs.weight'", "unknown role")),
    ("validate.toml", 'linear = ["ssm_in.weight"', 'linear = ["ssm_inn.weight"', ("[required] linear", "ssm_inn")),
    ("roles.toml", 'router = ["ffn_gate_inp"]', 'router = ["ffn_gate_inpt"]', ("[groups] router", "ffn_gate_inpt")),
]


@pytest.mark.parametrize("rel, old, new, parts",
                         WRONG_TYPES + BAD_EXPRESSIONS + UNKNOWN_ROLES)
def test_broken_copy_is_refused_naming_file_and_key(root, rel, old, new, parts):
    """A wrong type, an expression that does not parse, a role roles.toml does not know."""
    _edit(root, rel, old, new)
    _refused(root, f"mappings/{rel}", *parts)


def test_required_key_without_metadata_is_refused(root):
    _edit(root, "convert/qwen3moe.toml", '"{arch}.expert_feed_forward_length"]', '"{arch}.expert_feed_forward_lenght"]')
    _refused(root, "mappings/convert/qwen3moe.toml", "expert_feed_forward_lenght", "no [metadata] entry")


def test_dropping_an_inherited_key_that_does_not_exist_is_refused(root):
    _edit(root, "hf_configs.toml", "hidden_act = false\nfinal_logit", "hiden_act = false\nfinal_logit")
    _refused(root, "mappings/hf_configs.toml", "[config] hiden_act", "there is none of this name")


def test_same_gguf_key_twice_is_refused(root):
    _edit(root, "convert/qwen2.toml", '[metadata]\n',
          '[metadata]\n"{arch}.vocab_size:u32" = "vocab_size"\n"{arch}.vocab_size" = "1"\n')
    _refused(root, "mappings/convert/qwen2.toml", "given twice")


def test_unknown_file_is_refused(root):
    (root / "rolls.toml").write_text("[global]\n")
    _refused(root, "mappings/rolls.toml", "not a mapping file")


def test_config_keys_have_one_home(root):
    """The config.json / GGUF spellings of a fact live in config_keys.toml only."""
    _edit(root, "validate.toml", "[limits]", "[claims.num_layers]\nconfig = [\"n_layer\"]\n\n[limits]")
    _refused(root, "mappings/validate.toml", "[claims]", "unknown section")


def test_broken_toml_is_refused(root):
    _edit(root, "params_json.toml", "[keys]", "[keys")
    _refused(root, "mappings/params_json.toml", "not valid TOML")


# ---- expressions that fail for a model -----------------------------------------------------------------

_CFG = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 128,
        "rms_norm_eps": 1e-5, "vocab_size": 100, "max_position_embeddings": 128}


def _kvs(root: Path, family: str, cfg: dict) -> dict:
    fam = mapdata.convert_families(root)[family]
    return {k.key: k.value for k in metadata_kvs(fam, cfg)}


def test_failing_expression_is_an_error_naming_file_key_and_expression(root):
    _edit(root, "convert/qwen2.toml", "[metadata]\n", '[metadata]\n"{arch}.made_up" = "hidden_size // missing_value"\n')
    with pytest.raises(ExprError) as e:
        _kvs(root, "qwen2", _CFG)
    msg = str(e.value)
    for part in ("qwen2.made_up", "mappings/convert/qwen2.toml", "'{arch}.made_up'", "hidden_size // missing_value",
                 "TypeError"):
        assert part in msg, (part, msg)


def test_optional_key_and_none_are_left_out(root):
    _edit(root, "convert/qwen2.toml", "[metadata]\n",
          '[metadata]\n"{arch}.made_up?" = "hidden_size // missing_value"\n"{arch}.none" = "missing_value"\n'
          '"{arch}.fine:f32?" = "hidden_size / 2"\n')
    kv = _kvs(root, "qwen2", _CFG)
    assert "qwen2.made_up" not in kv and "qwen2.none" not in kv
    assert kv["qwen2.fine"] == 32.0 and kv["qwen2.embedding_length"] == 64


def test_shipped_families_convert_a_plain_config():
    """Each family's non-optional metadata evaluates for a config with the usual keys: no key
    depends on a value such configs lack without saying so."""
    cfg = {**_CFG, "head_dim": 16, "num_key_value_heads": 2, "rope_theta": 10000.0, "model_type": "x",
           "n_routed_experts": 4, "num_local_experts": 4, "num_experts": 4, "num_experts_per_tok": 2,
           "moe_intermediate_size": 32, "kv_lora_rank": 16, "qk_nope_head_dim": 8, "qk_rope_head_dim": 8,
           "v_head_dim": 8, "linear_conv_kernel_dim": 4, "linear_key_head_dim": 8, "linear_value_head_dim": 8,
           "linear_num_key_heads": 2, "linear_num_value_heads": 4, "shared_expert_intermediate_size": 32,
           "intermediate_size_mlp": 128, "embedding_multiplier_scale": 1.0, "output_multiplier_scale": 1.0,
           "layer_norm_epsilon": 1e-5, "sliding_window": 64, "_mtp_layers": 0}
    for fam in mapdata.convert_families().values():
        for m in fam.metadata.values():
            if not m.optional:
                m.expr.eval(cfg)          # raises ExprError naming the file and key


# ---- the expression objects ------------------------------------------------------------------------------

def test_expr_parses_once_and_refuses_what_it_cannot_run():
    e = compile_expr("head_dim or hidden_size // num_attention_heads", "f.toml: [metadata] k")
    assert e.eval({"hidden_size": 64, "num_attention_heads": 4}) == 16
    assert evaluate("[i * 2 for i in range(3) if i]", {}) == [2, 4]
    with pytest.raises(ExprError, match=r"f.toml: \[metadata\] k: .*TypeError"):
        e.eval({})
    for bad in ("a.b", "__import__('os')", "x[", "lambda: 1", "[x for x in y for z in w]", "x @ y", "f(*a)"):
        with pytest.raises(ExprError, match="bad expression"):
            compile_expr(bad)


def test_checking_the_mapping_data_needs_no_numerical_code():
    """Every mapping file is checked (op and generator names included) without importing numpy:
    `inspect` and `validate` load the conversion tables and must not pay for numpy."""
    import subprocess
    import sys
    code = ("import sys; from ckptkit import mapdata; mapdata.load_all(); "
            "assert 'numpy' not in sys.modules, 'numpy imported'; "
            "from ckptkit.conversion import transforms; "
            "assert set(transforms.OPS) == mapdata.convert.OP_NAMES; "
            "assert set(transforms.GENERATORS) == mapdata.convert.GENERATOR_NAMES")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
