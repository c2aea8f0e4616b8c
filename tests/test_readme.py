"""The README stays a user's guide whose commands work: every `ferbatch` line names a real command and real
options, its Python example runs, and it reads as a guide (short, no work-log wording)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest

from ferbatch.cli import cli

PROJECT = Path(__file__).resolve().parents[1]
README = (PROJECT / "README.md").read_text()


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def _command_lines() -> list[str]:
    lines = []
    for block in _blocks("bash"):
        for line in block.splitlines():
            line = line.split(" #")[0].strip()
            for part in line.split("&&"):
                words = part.strip()
                if words.startswith((".venv/bin/ferbatch ", "ferbatch ")):
                    lines.append(words)
    return lines


def _options(command: click.Command) -> set[str]:
    return {name for param in command.params for name in (*param.opts, *param.secondary_opts)}


@pytest.mark.parametrize("line", _command_lines())
def test_every_command_in_the_readme_names_a_real_command_and_real_options(line):
    words = shlex.split(line)[1:]
    command: click.Command = cli
    while isinstance(command, click.Group) and words and not words[0].startswith("-"):
        assert words[0] in command.commands, f"{line}: no command {words[0]!r}"
        command, words = command.commands[words[0]], words[1:]
    assert not isinstance(command, click.Group), f"{line}: names a group, not a command"
    given = {word.split("=")[0] for word in words if word.startswith("--")}
    assert given <= _options(command), f"{line}: unknown option(s) {given - _options(command)}"


def test_the_readme_names_the_commands_a_user_needs():
    named = {shlex.split(line)[1] for line in _command_lines()}
    assert {"score", "analyze", "report", "nightly", "config", "label"} <= named


def test_the_python_example_runs_and_prints_each_face():
    (example,) = _blocks("python")[:1]
    result = subprocess.run([sys.executable, "-c", example], cwd=PROJECT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    faces = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(faces) == 2  # fr_two_people.jpg has two faces
    assert all(re.search(r"(Angry|Disgust|Fear|Happy|Sad|Surprise|Neutral) 0\.\d+ (positive|negative|neutral)",
                         line) for line in faces), faces


def test_the_readme_is_a_short_users_guide():
    assert len(README.splitlines()) < 250
    assert not re.search(r"[Ii]ssue \d+|this round|borrowed|\b[0-9a-f]{7,40}\b(?![-.\w])", README)
    for link in re.findall(r"\]\(([^)#]+)\)", README):
        assert (PROJECT / link).exists(), f"README links to {link}, which is not there"
