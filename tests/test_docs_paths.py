"""The docs name no folder of one machine: commands use relative paths or environment variables."""

from __future__ import annotations

import re

from tests.conftest import REPO

# An absolute path: a slash-led path of at least two parts that is not part of a URL, a relative path
# (outputs/runs/*/...), a variable ($SCRATCH/...) or a home-relative path.
ABSOLUTE = re.compile(r"(?<![\w:/.<>~$}*-])/[A-Za-z][\w.-]*/[\w./-]+")
PLACEHOLDER = "/path/to/"  # the docs' way of saying "your folder here"


def test_no_doc_names_an_absolute_folder() -> None:
    docs = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    found = [
        f"{path.relative_to(REPO)}:{number}: {match}"
        for path in docs
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        for match in ABSOLUTE.findall(line)
        if not match.startswith(PLACEHOLDER)
    ]
    assert not found, "\n".join(found)


def test_the_pattern_catches_the_paths_it_must() -> None:
    assert ABSOLUTE.findall("BDRUN_CACHE_DIR=/work/bench-cache python x") == ["/work/bench-cache"]
    assert ABSOLUTE.findall("hydra.sweep.dir=/home/me/outputs/multirun/x") == ["/home/me/outputs/multirun/x"]
    assert not ABSOLUTE.findall("see https://hydra.cc/docs/x and outputs/runs/a/b and $SCRATCH/cache")
