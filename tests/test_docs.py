"""Users can open what they are pointed to: every document the README, a `--help` text, an error
message or a comment names is in the repository (docs/), with the section it names; nothing points
at a document the repository does not carry."""

from __future__ import annotations

import re
from pathlib import Path

from ochre.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
TEXT = (".py", ".md", ".cpp", ".h", ".txt", ".toml", ".html", ".js")
# A document or section outside the repository: what these replaced, and must not come back.
ELSEWHERE = re.compile(r"DESIGN(\.md| §| section)|STYLE(\.md| §)|REFERENCES(\.md|,| §)|\.\./shared/")
# docs/x.md[#anchor] anywhere, and relative Markdown links inside docs/ ([..](x.md#anchor)).
DOC_REF = re.compile(r"docs/([\w-]+\.md)(?:#([\w-]+))?")
MD_LINK = re.compile(r"\]\(([\w-]+\.md)(?:#([\w-]+))?\)")


def _files() -> list[Path]:
    skip = {".git", ".venv", ".venv-ci", "build", "build-ci", "results", "shipped"}
    return [p for p in ROOT.rglob("*") if p.is_file() and p.suffix in TEXT and not skip & set(p.relative_to(ROOT).parts)
            and not any(part.endswith(".egg-info") for part in p.parts) and p != Path(__file__)] + [ROOT / ".ci" / "run"]


def slug(heading: str) -> str:
    """The anchor a Markdown heading gets (GitHub's rule): lower case, punctuation dropped, spaces -> '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(doc: Path) -> set[str]:
    return {slug(m) for m in re.findall(r"^#+ (.*)$", doc.read_text(), re.M)}


def _help_texts() -> str:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices
    texts = [parser.format_help()]
    for p in sub.values():
        texts.append(p.format_help())
        texts += [q.format_help() for a in p._actions if a.choices and isinstance(a.choices, dict)
                  for q in a.choices.values()]
    return "\n".join(texts)


def test_every_named_document_and_section_exists():
    refs = [(path, doc, anchor) for path in _files() for doc, anchor in DOC_REF.findall(path.read_text())]
    refs += [(path, doc, anchor) for path in (ROOT / "docs").glob("*.md")
             for doc, anchor in MD_LINK.findall(path.read_text())]
    refs += [("ochre --help", doc, anchor) for doc, anchor in DOC_REF.findall(_help_texts())]
    assert len(refs) > 40
    missing = [f"{where}: docs/{doc}" for where, doc, _ in refs if not (ROOT / "docs" / doc).is_file()]
    assert missing == []
    bad = [f"{where}: docs/{doc}#{anchor}" for where, doc, anchor in refs
           if anchor and anchor not in anchors(ROOT / "docs" / doc)]
    assert bad == []


def test_nothing_names_a_document_outside_the_repository():
    found = [f"{p.relative_to(ROOT)}:{i}" for p in _files() for i, line in enumerate(p.read_text().splitlines(), 1)
             if ELSEWHERE.search(line)]
    assert found == []
    assert not ELSEWHERE.search(_help_texts())


def test_the_checker_sees_a_dangling_reference(tmp_path):
    assert "actions" in anchors(ROOT / "docs" / "data.md") and "nowhere" not in anchors(ROOT / "docs" / "data.md")
    assert DOC_REF.findall("see docs/data.md#actions and docs/gone.md") == [("data.md", "actions"), ("gone.md", "")]
    assert ELSEWHERE.search("units of DESIGN §3.2") and ELSEWHERE.search("see STYLE.md")
    assert slug("Clip shards (`ochre prepare` output)") == "clip-shards-ochre-prepare-output"
