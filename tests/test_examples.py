"""The examples in examples/ run as written, against the tests' local Hub server (HF_ENDPOINT is
set for the whole session, so every child process reaches it too): the Hub inspection script,
the GitHub Actions audit workflow (its run steps executed as Actions would), the llama.cpp
conversion script (its GGUF's logits checked in llama.cpp) and the Python comparison script;
plus the shell completion the README documents."""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import llama_child
import modelgen
from ckptkit.cli import main
from ckptkit.render.text import human_bytes
from convert_harness import assert_logits_match

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
TINY = EXAMPLES / "tiny-llama"
WORKFLOW = EXAMPLES / "ci" / "audit.yml"
SCRIPTS = ["inspect_hub.sh", "convert_for_llama_cpp.sh", "compare_architectures.py", "ci/audit.yml"]


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    """A PATH folder whose `ckptkit`, `python` and `python3` are this interpreter and checkout."""
    d = tmp_path / "bin"
    d.mkdir()
    for name, cmd in (("ckptkit", f'"{sys.executable}" -m ckptkit'), ("python", f'"{sys.executable}"'),
                      ("python3", f'"{sys.executable}"')):
        (d / name).write_text(f'#!/bin/sh\nexec {cmd} "$@"\n')
        (d / name).chmod(0o755)
    return d


def run(cmd: list[str], bin_dir: Path, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", **env}
    return subprocess.run(cmd, cwd=cwd, env=full, capture_output=True, text=True, timeout=600)


def md_table(text: str) -> tuple[list[str], dict[str, list[str]]]:
    """(headers, row label -> cells) of the Markdown table in ``text``."""
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    cells = [[c.strip() for c in ln.strip().strip("|").split(" | ")] for ln in lines]
    return cells[0], {r[0]: r[1:] for r in cells[2:]}


def data_bytes(folder: Path) -> int:
    """Tensor bytes of a safetensors folder, from the files' own header lengths."""
    total = 0
    for f in folder.glob("*.safetensors"):
        with f.open("rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
        total += f.stat().st_size - 8 - n
    return total


# ---- the catalogue of examples -----------------------------------------------------------------

def test_each_example_says_what_it_shows_and_is_listed():
    listing = (EXAMPLES / "README.md").read_text()
    for rel in SCRIPTS:
        text = (EXAMPLES / rel).read_text()
        head = text.splitlines()[1 if text.startswith("#!") else 0]
        assert re.match(r'(#|""") ?Shows: \S', head), f"{rel}: first line should say what it shows"
        assert f"[`{rel}`]({rel})" in listing, f"examples/README.md does not list {rel}"
    # and the listing names nothing that is not there
    for link in re.findall(r"\]\(([^)#]+)\)", listing):
        assert (EXAMPLES / link).exists(), link


# ---- inspect_hub.sh ----------------------------------------------------------------------------

def test_inspect_hub_reads_headers_only(hub, hf_cache, bin_dir, tmp_path):
    """A 16 GB Llama 3 8B layout on the Hub (only its headers exist): named, sized, and served in
    a few hundred kB."""
    files = modelgen.make_header_only("llama3_8b")
    hub.add_repo("meta/llama3-8b-layout", files)
    size = sum(len(v) if isinstance(v, bytes) else v.size for v in files.values())
    hub.reset_stats()
    r = run(["bash", str(EXAMPLES / "inspect_hub.sh"), "meta/llama3-8b-layout", "8192"], bin_dir, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Llama 3 8B" in r.stdout
    assert re.search(r"^ +memory .*8,192 tokens \(q8_0\)", r.stdout, re.M), r.stdout
    for line in ("family: Llama 3 8B", "num_layers: 32", "hidden_size: 4096", "attention: gqa",
                 "num_key_value_heads: 8"):
        assert line in r.stdout.splitlines(), line
    assert size > 15e9 and hub.bytes_sent < 2_000_000, hub.bytes_sent


# ---- ci/audit.yml ------------------------------------------------------------------------------

def _workflow() -> dict:
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load(WORKFLOW.read_text())


def _ckptkit_calls(wf: dict) -> list[list[str]]:
    """Every `ckptkit ...` command line of the run steps, as words ($VARS left as they are)."""
    calls = []
    for step in wf["jobs"]["audit"]["steps"]:
        for line in step.get("run", "").splitlines():
            m = re.search(r"\bckptkit\s.*", line)
            if m and "pip install" not in line:
                words = shlex.split(m.group(0).split("#")[0], posix=True)
                calls.append(words[: next((i for i, w in enumerate(words) if w in ("||", ">", "|")), len(words))])
    return calls


def test_workflow_commands_match_the_cli():
    calls = _ckptkit_calls(_workflow())
    assert {c[1] for c in calls if len(c) > 1} >= {"validate", "compare", "--version"}
    for words in calls:
        if words[1].startswith("--"):
            assert words[1] in {o for p in main.params for o in p.opts}, words
            continue
        cmd = main.commands[words[1]]
        by_opt = {o: p for p in cmd.params for o in p.opts}
        for i, w in enumerate(words[2:], 2):
            if w.startswith("--"):
                assert w in by_opt, f"ckptkit {words[1]} has no option {w}"
                p = by_opt[w]
                if isinstance(p.type, click.Choice):
                    assert words[i + 1] in p.type.choices, (w, words[i + 1])


def _run_workflow(wf: dict, workspace: Path, bin_dir: Path, repo_input: str = "") -> dict[str, tuple[int, str]]:
    """The job's run steps in order, as GitHub Actions runs them (bash -e, the workflow's and the
    step's env, GITHUB_OUTPUT, GITHUB_STEP_SUMMARY, `if: always()`); the install step is skipped
    (this checkout is installed). Step name -> (exit status, stdout)."""
    summary, outputs_file = workspace / "summary.md", workspace / "github_output"
    summary.touch()
    outputs: dict[str, dict[str, str]] = {}
    known = {"github.event.inputs.repo": repo_input, "secrets.HF_TOKEN": ""}
    results: dict[str, tuple[int, str]] = {}
    failed = False

    def expand(value: str) -> str:
        def one(m: re.Match) -> str:
            expr = m.group(1).strip()
            if expr.startswith("steps."):
                _, sid, _, key = expr.split(".")
                return outputs[sid][key]
            assert expr in known, f"the test does not know ${{{{ {expr} }}}}"
            return known[expr]
        return re.sub(r"\$\{\{(.*?)\}\}", one, str(value))

    for step in wf["jobs"]["audit"]["steps"]:
        if "run" not in step or "pip install" in step["run"]:
            continue
        if failed and step.get("if") != "always()":
            continue
        assert "${{" not in step["run"], f"{step['name']}: expressions belong in env, not in the script"
        outputs_file.write_text("")
        env = {k: expand(v) for k, v in {**wf.get("env", {}), **step.get("env", {})}.items()}
        script = workspace / "step.sh"
        script.write_text(step["run"])
        r = run(["bash", "--noprofile", "--norc", "-e", str(script)], bin_dir, workspace,
                GITHUB_OUTPUT=str(outputs_file), GITHUB_STEP_SUMMARY=str(summary), **env)
        results[step["name"]] = (r.returncode, r.stdout + r.stderr)
        failed = failed or r.returncode != 0
        if "id" in step:
            outputs[step["id"]] = dict(ln.split("=", 1) for ln in outputs_file.read_text().splitlines() if ln)
    return results


def _workspace(tmp_path: Path, model: Path) -> Path:
    """A repository checkout as the workflow sees it: model/ and the example policy."""
    ws = tmp_path / "checkout"
    (ws / "examples" / "ci").mkdir(parents=True)
    shutil.copy(EXAMPLES / "ci" / "ckptkit.toml", ws / "examples" / "ci")
    shutil.copytree(model, ws / "model")
    return ws


def test_workflow_audits_the_repository_model(tmp_path, bin_dir):
    ws = _workspace(tmp_path, TINY)
    res = _run_workflow(_workflow(), ws, bin_dir)
    assert set(res) == {"Check it is this ckptkit", "Choose what to audit", "Validate",
                        "Report (JSON artifact and job summary)"}
    assert all(rc == 0 for rc, _ in res.values()), res
    assert "0 error(s), 0 warning(s)" in res["Validate"][1]
    report = json.loads((ws / "ckptkit-report.json").read_text())
    assert report["source"] == "model" and report["findings"] == []
    headers, rows = md_table((ws / "summary.md").read_text())
    assert headers[1] == "model" and rows["Layers"] == ["2"] and rows["Q / KV heads"] == ["4 / 2"]


def test_workflow_fails_a_pickle_and_still_reports(tmp_path, bin_dir):
    ws = _workspace(tmp_path, TINY)
    (ws / "model" / "pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")
    res = _run_workflow(_workflow(), ws, bin_dir)
    rc, out = res["Validate"]
    assert rc == 1 and "::error file=model/pytorch_model.bin,title=policy.pickle::" in out, out
    assert res["Report (JSON artifact and job summary)"][0] == 0        # if: always()
    report = json.loads((ws / "ckptkit-report.json").read_text())
    assert [f["code"] for f in report["findings"]] == ["policy.pickle"]


def test_workflow_audits_a_hub_repo_on_demand(hub, hf_cache, tmp_path, bin_dir):
    hub.add_repo_from_dir("acme/tiny-llama", TINY)
    ws = _workspace(tmp_path, TINY)
    shutil.rmtree(ws / "model")                 # the Hub copy is audited, not a local one
    res = _run_workflow(_workflow(), ws, bin_dir, repo_input="acme/tiny-llama")
    assert all(rc == 0 for rc, _ in res.values()), res
    report = json.loads((ws / "ckptkit-report.json").read_text())
    assert "acme/tiny-llama" in report["source"] and report["tensor_count"] == 21
    assert hub.count("GET", "acme/tiny-llama") > 0
    headers, rows = md_table((ws / "summary.md").read_text())
    assert headers[1] == "acme/tiny-llama" and rows["Hidden size"] == ["64"]


# ---- convert_for_llama_cpp.sh ------------------------------------------------------------------

def test_convert_for_llama_cpp_from_the_hub(hub, hf_cache, tmp_path, bin_dir):
    """The script's conversion part, streamed from a Hub repo; llama.cpp's logits on the GGUF
    match transformers' on the example."""
    hub.add_repo_from_dir("acme/tiny-llama", TINY)
    out = tmp_path / "tiny.gguf"
    r = run(["bash", str(EXAMPLES / "convert_for_llama_cpp.sh"), "acme/tiny-llama", str(out), "f16"],
            bin_dir, tmp_path, RUN="0")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("family llama -> GGUF arch llama; 21 tensors")
    assert "[permute_rope]" in r.stdout and "no findings" in r.stdout
    assert "llama.cpp generated" not in r.stdout                 # RUN=0 stops before running
    assert out.exists() and not list(tmp_path.glob(".ckptkit-*"))
    assert_logits_match(out, TINY, rtol=2e-2)


def test_convert_for_llama_cpp_runs_it(tmp_path, bin_dir):
    llama_child.require()
    if shutil.which("llama-completion") or shutil.which("llama-cli"):
        pytest.skip("llama.cpp's own CLI is installed: the script would run that, not llama-cpp-python")
    r = run(["bash", str(EXAMPLES / "convert_for_llama_cpp.sh")], bin_dir, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "tiny-llama.gguf").exists()
    assert re.search(r"^llama\.cpp generated [1-9]\d* tokens: ", r.stdout, re.M), r.stdout


# ---- compare_architectures.py ------------------------------------------------------------------

def test_compare_architectures_script(tiny_model, hub, hf_cache, tmp_path, bin_dir):
    llama, qwen3 = tiny_model("llama"), tiny_model("qwen3")
    hub.add_repo_from_dir("acme/tiny-llama", TINY)
    specs = [str(llama), str(qwen3), "acme/tiny-llama"]
    r = run([sys.executable, str(EXAMPLES / "compare_architectures.py"), *specs], bin_dir, tmp_path)
    assert r.returncode == 0, r.stderr
    headers, rows = md_table(r.stdout)
    assert headers == ["", *specs]
    assert rows["Family"] == ["Llama 2 / Llama 3", "Qwen3 (dense)", "Llama 2 / Llama 3"]
    assert rows["Layers"] == ["2", "2", "2"] and rows["Hidden size"] == ["64", "64", "64"]
    assert "QK-norm" in rows["Norm"][1] and "QK-norm" not in rows["Norm"][0]
    # ckptkit compare's rows, cell for cell: the script builds them with the same functions
    cli = run(["ckptkit", "compare", *specs, "--markdown"], bin_dir, tmp_path)
    assert cli.returncode == 0, cli.stderr
    cli_headers, cli_rows = md_table(cli.stdout)
    assert cli_headers == headers and len(cli_rows) >= 10
    assert all(rows[label] == cells for label, cells in cli_rows.items())
    # and the rows it adds, checked against the files themselves
    folders = [llama, qwen3, TINY]
    counts = [len(json.loads((d / "model.safetensors.index.json").read_text())["weight_map"]) for d in folders]
    assert rows["Tensors"] == [f"{n:,}" for n in counts]
    assert rows["Stored bytes"] == [human_bytes(data_bytes(d)) for d in folders]
    for cell in rows["Facts from tensors alone"]:
        n, m = map(int, re.fullmatch(r"(\d+) of (\d+)", cell).groups())
        assert 0 < n < m


def test_compare_architectures_refuses_in_one_line(tmp_path, bin_dir):
    r = run([sys.executable, str(EXAMPLES / "compare_architectures.py"), str(tmp_path / "nothing")], bin_dir, tmp_path)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("compare_architectures: ") and r.stderr.count("\n") == 1


# ---- shell completion --------------------------------------------------------------------------

def test_bash_completion_script_is_printed():
    r = CliRunner().invoke(main, [], prog_name="ckptkit", env={"_CKPTKIT_COMPLETE": "bash_source"})
    assert r.exit_code == 0
    assert "_ckptkit_completion()" in r.output
    assert "complete -o nosort -F _ckptkit_completion ckptkit" in r.output
    for shell, marker in (("zsh", "#compdef ckptkit"), ("fish", "complete --no-files --command ckptkit")):
        r = CliRunner().invoke(main, [], prog_name="ckptkit", env={"_CKPTKIT_COMPLETE": f"{shell}_source"})
        assert r.exit_code == 0 and marker in r.output, (shell, r.output)


def test_bash_completion_completes_commands_and_choices(tmp_path):
    """The README's line, in a real bash with the installed `ckptkit` script: commands and
    option values complete."""
    script = Path(sys.executable).with_name("ckptkit")
    if not script.exists():
        pytest.skip("no ckptkit console script next to this interpreter")
    readme = (REPO / "README.md").read_text()
    line = 'eval "$(_CKPTKIT_COMPLETE=bash_source ckptkit)"'
    assert line in readme
    probe = "\n".join([
        line,
        "COMP_WORDS=(ckptkit ins); COMP_CWORD=1; _ckptkit_completion ckptkit; echo \"${COMPREPLY[*]}\"",
        "COMPREPLY=(); COMP_WORDS=(ckptkit convert a b --outtype q); COMP_CWORD=5; _ckptkit_completion ckptkit; "
        "echo \"${COMPREPLY[*]}\"",
    ])
    env = {**os.environ, "PATH": f"{script.parent}{os.pathsep}{os.environ['PATH']}"}
    r = subprocess.run(["bash", "--noprofile", "--norc", "-c", probe], capture_output=True, text=True,
                       env=env, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["inspect", "q8_0"]
