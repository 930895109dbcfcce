"""The board's "Regenerate" section: how to train its runs again and redraw it, and on what.

A board is only worth publishing if the commands written under it reproduce it: the distinct
commands its runs recorded (``spec.json``'s ``command``), the board command itself, the git
commits of the code that trained the runs and wrote the board, the library versions and the
CPU. Two things make those commands lie, and the section says so in bold instead of hiding
it: a commit with uncommitted changes (``-dirty``, or unknown) and an absolute path (it
names one machine's folders; paths must be relative to the repository root, as typed).
"""

from __future__ import annotations

import os
import shlex
from typing import Any, Iterable, Sequence

UNKNOWN = "unknown"
META = (("torch", "torch"), ("numpy", "numpy"), ("python", "python"), ("CPU", "cpu"))


def absolute_paths(command: str) -> list[str]:
    """The words of ``command`` (or the values of its ``--flag=VALUE`` words) that are absolute
    paths; the program itself (``/usr/bin/python``) counts too."""
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    values = [w.split("=", 1)[1] if w.startswith("--") and "=" in w else w for w in words]
    return [v for v in values if os.path.isabs(v)]


def not_reproducible(commits: Iterable[str | None], commands: Iterable[str]) -> list[str]:
    """Why the commands may not reproduce the board (empty when they should)."""
    problems = []
    unclean = sorted(
        {c or UNKNOWN for c in commits if c in (None, UNKNOWN) or c.endswith("-dirty")}
    )
    if unclean:
        problems.append(
            f"code with uncommitted changes or of unknown commit ({', '.join(unclean)}): commit, "
            "then train and draw the board again"
        )
    absolute = sorted({p for c in commands for p in absolute_paths(c)})
    if absolute:
        problems.append(
            f"absolute paths ({', '.join(absolute)}): run from the repository root with "
            "relative paths"
        )
    return problems


def _distinct(values: Iterable[Any]) -> str:
    found = sorted({str(v) for v in values if v is not None})
    return ", ".join(found) if found else UNKNOWN


def regenerate(infos: Sequence[dict[str, Any]], commit: str | None, command: str) -> list[str]:
    """Markdown lines: ``infos`` are the runs' ``spec.json`` contents (command, meta), ``commit``
    the code's that draws the board, ``command`` the board command as typed."""
    commands = sorted({i["command"] for i in infos if i.get("command")})
    run_commits = sorted({(i.get("meta") or {}).get("git") or UNKNOWN for i in infos})
    problems = not_reproducible([commit, *run_commits], [*commands, command])
    metas = [i.get("meta") or {} for i in infos]
    versions = "; ".join(f"{label} {_distinct(m.get(key) for m in metas)}" for label, key in META)
    return [
        "## Regenerate every number",
        "",
        *(f"**Not reproducible as written: {p}.**\n" for p in problems),
        f"{len(infos)} runs, trained at git commit {', '.join(f'`{c}`' for c in run_commits)}; "
        f"board written at `{commit or UNKNOWN}`. {versions}.",
        "",
        "Train, from the repository root (finished runs are skipped, unfinished ones resumed):",
        "",
        "```",
        *(commands or ["(the runs recorded no command)"]),
        "```",
        "",
        "Tables and figures:",
        "",
        "```",
        command,
        "```",
    ]
