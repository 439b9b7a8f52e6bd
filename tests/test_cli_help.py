"""Every command's --help shows examples, and every example parses: the command exists, its
options exist and their values are accepted (checked by click itself, without running it)."""
from __future__ import annotations

import shlex

import click
import pytest
from click.testing import CliRunner

from ckptkit.cli import main


def examples(name: str) -> list[list[str]]:
    out = CliRunner().invoke(main, [name, "--help"], terminal_width=200).output
    assert "Examples:" in out, f"ckptkit {name} --help shows no examples"
    block = out.split("Examples:", 1)[1].split("\n\n", 1)[0]
    return [shlex.split(line)[1:] for line in block.splitlines() if line.strip().startswith("ckptkit ")]


@pytest.mark.parametrize("name", sorted(main.commands))
def test_help_examples_parse(name):
    found = examples(name)
    assert found, f"ckptkit {name} --help: no example lines"
    for argv in found:
        assert argv[0] == name, f"an example of {name} runs {argv[0]}"
        cmd = main.commands[name]
        try:
            cmd.make_context(name, argv[1:], resilient_parsing=False)
        except click.UsageError as e:   # an unknown option, a bad choice, a missing argument
            pytest.fail(f"ckptkit {' '.join(argv)}: {e.format_message()}")
