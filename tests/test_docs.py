"""The documentation stays honest where a test can tell: every `python ...` command in the
README and the docs names a script or module that exists and only flags that its `--help`
lists; product text says nothing about how the project was developed; the benchmarks and
tools run as documented; the GPU requirements pin TensorFlow as the others do."""

from __future__ import annotations

import functools
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_DIR

DOCUMENTS = ["README.md", *sorted(str(p.relative_to(REPO_DIR)) for p in (REPO_DIR / "docs").glob("*.md")),
             "models/README.md", "models/DETECTORS.md"]
PYTHON = re.compile(r"^(?:.*/)?python(?:3(?:\.\d+)?)?$")
NOT_OURS = {"venv", "pip", "pytest"}  # python -m modules that are not the project's


# ---------------------------------------------------------------------------------------
# Commands in the docs
# ---------------------------------------------------------------------------------------

def shell_lines(markdown: str) -> list[str]:
    """Command lines of the fenced code blocks (continuations joined, prompts dropped) and
    the inline code spans, each as one line."""
    lines = []
    for block in re.findall(r"^```[^\n]*\n(.*?)^```", markdown, re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            lines.append(line.strip().removeprefix("$ "))
    lines += [" ".join(span.split()) for span in re.findall(r"(?<!`)`([^`]+)`(?!`)", markdown)]
    return lines


def python_commands(markdown: str) -> list[list[str]]:
    """Each `python ...` command as tokens from the script or `-m module` on; several
    commands on a line (`&&`, `;`, `|`) are taken apart, comments dropped."""
    commands = []
    for line in shell_lines(markdown):
        if not re.search(r"(^|[\s/])python[\d.]*(\s|$)", line):
            continue
        command: list[str] | None = None
        at_start = True  # only VAR=value may come before the interpreter
        for token in shlex.split(line, comments=True) + ["&&"]:
            if token in ("&&", ";", "|", "||"):
                if command:
                    commands.append(command)
                command, at_start = None, True
            elif command is not None:
                command.append(token)
            elif at_start and PYTHON.match(token):
                command = []
            elif not re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", token):
                at_start = False
    return [c for c in commands if c and c[0] != "-c" and not (c[0] == "-m" and c[1] in NOT_OURS)]


@functools.lru_cache(maxsize=None)
def help_text(entry: tuple[str, ...]) -> str:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, *entry, "--help"], cwd=REPO_DIR, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{' '.join(entry)} --help failed:\n{result.stderr[-2000:]}"
    return result.stdout


def check_command(command: list[str]) -> list[str]:
    """What is wrong with one documented command: a missing script or module, a flag its
    --help does not list."""
    if command[0] == "-":  # a script read from standard input
        return []
    if command[0] == "-m":
        module, args = command[1], command[2:]
        package, _, name = module.rpartition(".")
        if re.fullmatch(r"[A-Z_]+", name):  # a placeholder: benchmarks.NAME
            return [] if (REPO_DIR / package).is_dir() else [f"python -m {module}: no {package}/"]
        path = REPO_DIR / (module.replace(".", "/") + ".py")
        if not path.exists():
            return [f"python -m {module}: no {path.relative_to(REPO_DIR)}"]
        entry = ("-m", module)
    else:
        script, args = command[0], command[1:]
        if not (REPO_DIR / script).is_file():
            return [f"python {script}: no such file"]
        entry = (script,)
    if not any(arg.startswith("-") for arg in args):
        return []  # nothing to check against --help (python model.py has none)
    usage = help_text(entry)
    subcommands = re.search(r"\{([\w,-]+)\}", usage.split("\n\n")[0])
    positional = [a for a in args if not a.startswith("-")]
    if subcommands and positional and positional[0] in subcommands.group(1).split(","):
        entry = entry + (positional[0],)
        usage = help_text(entry)
    faults = []
    for arg in args:
        if arg == "--":  # what follows belongs to the program it runs
            break
        flag = arg.split("=", 1)[0]
        if re.fullmatch(r"--?[A-Za-z][\w-]*", flag) and not re.search(
                rf"(?<![\w-]){re.escape(flag)}(?![\w-])", usage):
            faults.append(f"python {' '.join(entry)}: {flag} is not in its --help")
    return faults


def test_commands_are_found_in_markdown():
    text = ("```bash\nA=b python train.py --epochs 2 \\\n    --lr 0.1  # note\n```\n"
            "Run `python -m benchmarks.video\n--tune` or `python3 -m venv .venv && .venv/bin/python predict.py x.jpg`.\n"
            "```\n$ .venv-pi/bin/python app.py --port 0\nINFO python is not a command here\n```\n")
    assert python_commands(text) == [["train.py", "--epochs", "2", "--lr", "0.1"],
                                     ["app.py", "--port", "0"],
                                     ["-m", "benchmarks.video", "--tune"],
                                     ["predict.py", "x.jpg"]]


def test_a_wrong_flag_or_script_is_reported():
    assert check_command(["train.py", "--epochs", "2", "--no-download"]) == []
    assert check_command(["train.py", "--epoch", "2"]) == ["python train.py: --epoch is not in its --help"]
    assert check_command(["bench.py"]) == ["python bench.py: no such file"]
    assert check_command(["-m", "benchmarks.nothing"]) == ["python -m benchmarks.nothing: no benchmarks/nothing.py"]
    assert check_command(["packed_train.py", "recalibrate", "w.h5", "--crops", "9"]) == []
    assert check_command(["packed_train.py", "pack", "--crops", "9"]) == [
        "python packed_train.py pack: --crops is not in its --help"]


@pytest.mark.slow
@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_python_command_names_a_file_and_flags_that_exist(document):
    commands = python_commands((REPO_DIR / document).read_text())
    if document == "README.md":
        assert len(commands) >= 10
    faults = [fault for command in commands for fault in check_command(command)]
    assert not faults, f"{document}:\n" + "\n".join(faults)


# ---------------------------------------------------------------------------------------
# No word about how the project was developed
# ---------------------------------------------------------------------------------------

DEVELOPMENT_WORDS = [
    r"\bissues? ?#?\d+",  # "issue 10", "issues #3"
    r"\bsessions\b",
    r"\b(first|second|third|fourth|another|later|earlier|previous|next) session\b",
    r"\b(lent|borrowed|loaned)\b",
    r"\b(the|our) team\b",
    r"\bclosing note",
]


def product_files() -> list[Path]:
    """README, docs, model cards, code (comments and CLI help), the web app, requirements."""
    files = [REPO_DIR / "README.md", *REPO_DIR.glob("docs/**/*.md"), *REPO_DIR.glob("models/*.md"),
             *REPO_DIR.glob("*.py"), *REPO_DIR.glob("benchmarks/*.py"), *REPO_DIR.glob("tools/*.py"),
             *REPO_DIR.glob("templates/**/*"), *REPO_DIR.glob("static/**/*"),
             *REPO_DIR.glob("requirements*.txt"), REPO_DIR / ".ci" / "run"]
    return [f for f in files if f.is_file() and f.suffix not in (".png", ".jpg", ".jpeg", ".ico")]


def development_words(text: str) -> list[str]:
    return [match.group(0) for pattern in DEVELOPMENT_WORDS
            for match in re.finditer(pattern, text, re.IGNORECASE)]


def test_development_words_are_recognised():
    assert development_words("the model of issue 10, lent to a session") == ["issue 10", "lent"]
    assert development_words("the second session had no GPU; the team") == ["second session", "the team"]
    assert development_words("`packed_train.py session` runs several side by side; excellent") == []


def test_product_text_says_nothing_about_how_it_was_developed():
    files = product_files()
    assert len(files) > 30
    faults = [f"{path.relative_to(REPO_DIR)}:{number}: {word!r}"
              for path in files
              for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
              for word in development_words(line)]
    assert not faults, "\n".join(faults)


# ---------------------------------------------------------------------------------------
# Layout and requirements
# ---------------------------------------------------------------------------------------

MODULES = sorted(f"{p.parent.name}.{p.stem}" for folder in ("benchmarks", "tools")
                 for p in (REPO_DIR / folder).glob("*.py") if p.stem != "__init__")


def test_benchmarks_and_tools_live_in_their_folders():
    assert not [p.name for p in REPO_DIR.glob("bench*.py")]
    assert {"benchmarks.landmarks", "benchmarks.video", "tools.pi_emulation",
            "tools.tflite_to_keras"} <= set(MODULES)


@pytest.mark.slow
@pytest.mark.parametrize("module", MODULES)
def test_each_benchmark_and_tool_runs_as_a_module(module):
    assert help_text(("-m", module)).startswith(f"usage: python -m {module}")


def requirement(path: Path, name: str) -> str:
    for line in path.read_text().splitlines():
        match = re.match(rf"{re.escape(name)}(\[[\w,-]+\])?\s*([=<>!~].*)$", line.strip())
        if match:
            return match.group(2).strip()
    raise AssertionError(f"{path.name}: no {name}")


def test_gpu_requirements_pin_tensorflow_with_cuda_as_the_others_pin_tensorflow():
    gpu = (REPO_DIR / "requirements-gpu.txt").read_text()
    assert "-r requirements.txt" in gpu and "tensorflow[and-cuda]" in gpu
    assert requirement(REPO_DIR / "requirements-gpu.txt", "tensorflow") == \
        requirement(REPO_DIR / "requirements.txt", "tensorflow")
