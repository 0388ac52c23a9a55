"""What the code cites lives in the repository: every design citation names a section of docs/design.md."""

from __future__ import annotations

import re
from pathlib import Path

CITED_IN = ("fststyle", "conf", "bench", "docs", "tests", "README.md", "train.py", "infer.py")
SUFFIXES = {".py", ".yaml", ".md"}


def cited_files(repo: Path) -> list[Path]:
    files = []
    for name in CITED_IN:
        path = repo / name
        files += [path] if path.is_file() else [p for p in path.rglob("*") if p.suffix in SUFFIXES]
    return [p for p in files if p.name != "test_docs.py"]


def test_design_citations_name_sections_of_docs_design_md(repo: Path) -> None:
    sections = set(re.findall(r"^## (.+)$", (repo / "docs" / "design.md").read_text(), flags=re.M))
    outside, missing, cited = [], [], 0
    for path in cited_files(repo):
        text = path.read_text()
        if re.search(r"DESIGN(\.md)? ?§", text):
            outside.append(str(path.relative_to(repo)))  # the old notes outside the repository
        for section in re.findall(r"docs/design\.md §([A-Z]\w*(?: [a-z]+)*)", text):
            cited += 1
            if section not in sections:
                missing.append(f"{path.relative_to(repo)}: §{section}")
    assert not outside, f"cite docs/design.md instead of the design notes outside the repository: {outside}"
    assert not missing, f"no such section in docs/design.md ({sorted(sections)}): {missing}"
    assert cited >= 5
