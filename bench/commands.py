"""Recorded command lines in today's syntax, so every command a board prints runs at HEAD.

Each run records the command that trained it (``spec.json``'s ``command``), and boards
print those commands as the way to regenerate their numbers. Older runs recorded the CLI
of their time: ``bench run`` chose one run, a sweep or a transfer run from the flags
given, and ``--no-stack`` existed; runs with weight averaging were trained by
``python -m bench.posthoc train``, a sweep with the same flags (``bench sweep --averaging``
today). That syntax is frozen, so its flags are listed here as data rather than read from
today's parser.
"""

from __future__ import annotations

import shlex

# Flags that made an old ``bench run`` a sweep (they belong to ``bench sweep`` now).
LEGACY_SWEEP_FLAGS = frozenset(
    {
        "--algorithms",
        "--datasets",
        "--n-hparams",
        "--n-trials",
        "--launcher",
        "--jobs",
        "--scheduler",
        "--dry-run",
        "--slurm-partition",
        "--slurm-timeout",
        "--slurm-cluster",
        "--selection",
    }
)
LEGACY_TRANSFER_FLAGS = frozenset({"--task", "--recipe", "--recipes"})
REMOVED_FLAGS = frozenset({"--no-stack"})  # took no value; dropped from old commands
TEST_ENV_KEYWORDS = ("single", "all", "pairs")  # --test-envs values that expand into runs

# Singular flags of an old sweep or transfer sweep and their names there today.
_SWEEP_NAMES = {"--algorithm": "--algorithms", "--dataset": "--datasets"}
_TRANSFER_SWEEP_NAMES = {
    "--task": "--tasks",
    "--recipe": "--recipes",
    "--dataset": "--tasks",
    "--datasets": "--tasks",
}


def current_syntax(command: str) -> str:
    """``command`` as today's CLI takes it; unchanged when it already does (or is not bench's).

    An old ``bench run`` with sweep flags, a ``--test-envs`` keyword or no algorithm and no
    dataset (the default benchmark with options) becomes ``bench sweep``; with ``--task``,
    ``--recipe`` or ``--recipes`` it becomes ``bench transfer`` (``--tasks``/``--recipes``
    when it swept). ``--no-stack`` is dropped. ``bench.posthoc train`` becomes ``bench sweep``.
    """
    try:
        words = shlex.split(command)
    except ValueError:
        return command
    for i, word in enumerate(words[:-1]):
        if word == "bench.posthoc" and words[i + 1] == "train":
            return shlex.join([*words[:i], "bench", "sweep", *words[i + 2 :]])
    at = _subcommand_at(words)
    if at is None or words[at] != "run":
        return command
    flags = [w for w in words[at + 1 :] if w not in REMOVED_FLAGS]
    names = {w.split("=", 1)[0] for w in flags if w.startswith("--")}
    sweeps = bool(names & LEGACY_SWEEP_FLAGS) or _test_envs(flags) in TEST_ENV_KEYWORDS
    if names & LEGACY_TRANSFER_FLAGS:
        sweeps = sweeps or "--recipes" in names
        mode, renames = "transfer", _TRANSFER_SWEEP_NAMES if sweeps else {}
    elif sweeps or (flags and not names & {"--algorithm", "--dataset"}):
        mode, renames = "sweep", _SWEEP_NAMES
    else:
        mode, renames = "run", {}
    new = [*words[:at], mode, *(_renamed(w, renames) for w in flags)]
    return command if new == words else shlex.join(new)


def _subcommand_at(words: list[str]) -> int | None:
    """Index of the word after ``bench`` (``python -m bench`` or the ``bench`` script) that is not
    an option."""
    for i, word in enumerate(words):
        if word == "bench" or word.endswith("/bench"):
            rest = [j for j in range(i + 1, len(words)) if not words[j].startswith("-")]
            return rest[0] if rest else None
    return None


def _test_envs(flags: list[str]) -> str | None:
    for i, word in enumerate(flags):
        if word.startswith("--test-envs="):
            return word.split("=", 1)[1]
        if word == "--test-envs" and i + 1 < len(flags):
            return flags[i + 1]
    return None


def _renamed(word: str, renames: dict[str, str]) -> str:
    name, eq, value = word.partition("=")
    return renames[name] + eq + value if name in renames else word
