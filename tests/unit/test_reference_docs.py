"""Every citation of a reference document resolves (fast tier: no Ray, no network).

A citation is a ``NAME.md`` mention, optionally followed by sections: ``ocean_facts.md §9.3``,
``ray_stack.md §2, §4``, ``formats.md §1.1 / §1.2``, ``facts §12.1/§12.2``, ``facts §§7.3-7.4``,
``facts §1-§4``, ``facts §4.1 step 2, §13.3 item 11``. ``facts`` and ``ocean_facts`` stand for
``ocean_facts.md``. A section with no file name before it continues the nearest citation before it on its
line; failing that, inside a document of ``docs/reference/`` it points into that document, and elsewhere
it continues the latest citation of the three lines above. Not citations: URLs, files of the official code
written after its tag (TK `lib/x.md`), a whole Python string literal ("notes/x.md", a file the code
writes), the output names in WRITTEN_NAMES, and the placeholders §N / §N.M that describe the form.

Rules checked over every tracked or new ``.py``, ``.md``, ``.sh``, ``.yaml`` / ``.yml``, ``.toml`` and
``Makefile`` (except this file, whose checks of the checker spell out bad citations):
* the cited ``NAME.md`` exists: at the path written (from the repository root or the citing file's
  folder), or as ``docs/reference/NAME.md``, ``docs/NAME.md`` or ``NAME.md`` at the root;
* each cited section is a numbered heading (``## 9.``, ``### 9.3 ...``) of that file;
* nothing points outside the repository at ``../shared/`` or ``shared/reference`` (reading test data
  from ``../shared/data`` is allowed).
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

SUFFIXES = {".py", ".md", ".sh", ".yaml", ".yml", ".toml"}
SKIP_DIRS = {".venv", ".git", "__pycache__", "build", "dist", ".pytest_cache", ".ruff_cache"}
# Markdown files the project writes as output; a mention of one is not a citation.
WRITTEN_NAMES = {"ablation.md", "summary.md", "gpu_check.md"}
ALIASES = {"facts": "ocean_facts.md", "ocean_facts": "ocean_facts.md"}
REFERENCE_DIR = Path("docs") / "reference"
BARE_WINDOW = 3  # a section without a file name continues a citation at most this many lines above

SIGN = "\u00a7"  # the section sign
SECTION = r"\d+(?:\.\d+)*"
_MD_TOKEN = re.compile(r"[\w./-]*\w\.md(?![\w-])")
_ALIAS = re.compile(rf"(?<![\w.])(ocean_facts|facts)(?=\s*{SIGN})")
_HEADING = re.compile(rf"^#{{1,6}}\s+({SECTION})\.?(?:\s|$)")
_FENCE = re.compile(r"^\s*(```|~~~)")
_REF = re.compile(rf"{SIGN}{SIGN}?\s?({SECTION})")
_QUALIFIER = re.compile(r"\s+(?:items?|steps?)\s+\d+[a-z]?(?:\s*[-–]\s*\d+)?")
_RANGE_END = re.compile(rf"\s*[-–]\s*{SIGN}{{0,2}}\s?({SECTION})")
_NEXT = re.compile(rf"\s*(?:[,/;&]|and|or)?\s*(?={SIGN})")
_UPSTREAM = re.compile(r"\b(?:TK|SOTS)(?:'s)?\s+`?$")  # TracKit / SOTS, the official code's repositories
_PLACEHOLDER = re.compile(rf"{SIGN}{{1,2}}N(?:\.M)?\b")  # "facts §N.M" describing the form, not a section
_FORBIDDEN = re.compile(r"(?:\.\./)?shared/reference|\.\./shared/(?!data/)")


@dataclass(frozen=True)
class Citation:
    path: Path  # the citing file
    line: int
    target: str  # the name or path as written (aliases resolved to ocean_facts.md)
    sections: tuple[str, ...]


def repo_root() -> Path:
    here = Path(__file__).resolve().parent
    for d in (here, *here.parents):
        if (d / "pyproject.toml").is_file():
            return d
    raise RuntimeError("no pyproject.toml above the tests")


def scanned_files(root: Path) -> list[Path]:
    """Tracked and new (not ignored) files of the kinds that may cite; a plain walk outside git."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             cwd=root, capture_output=True, check=True, timeout=60).stdout
        names = [n for n in out.decode().split("\0") if n]
    except (OSError, subprocess.SubprocessError):
        names = []
        for d, dirs, files in os.walk(root):
            dirs[:] = [x for x in dirs if x not in SKIP_DIRS and not x.endswith(".egg-info")]
            names += [os.path.relpath(os.path.join(d, f), root) for f in files]
    keep = []
    for n in sorted(set(names)):
        p = Path(n)
        if SKIP_DIRS.intersection(p.parts[:-1]) or not (root / p).is_file():
            continue
        if (root / p).resolve() == Path(__file__).resolve():
            continue  # this file spells out bad citations on purpose
        if p.suffix in SUFFIXES or p.name == "Makefile":
            keep.append(root / p)
    return keep


def _chain(text: str, pos: int) -> tuple[list[str], int]:
    """Sections cited from ``text[pos]`` (a section sign) on: lists, ranges (both ends), item / step
    qualifiers."""
    sections: list[str] = []
    while True:
        m = _REF.match(text, pos)
        if not m:
            return sections, pos
        sections.append(m.group(1))
        pos = m.end()
        q = _QUALIFIER.match(text, pos)
        if q:
            pos = q.end()
        r = _RANGE_END.match(text, pos)
        if r:
            sections.append(r.group(1))
            pos = r.end()
        n = _NEXT.match(text, pos)
        if not n:
            return sections, pos
        pos = n.end()


def _is_external(line: str, start: int, end: int) -> bool:
    """A URL, or a file of the official code written after its repository's tag (TK `lib/x.md`)."""
    word_start = max(line.rfind(" ", 0, start), line.rfind("(", 0, start), line.rfind("<", 0, start)) + 1
    return "://" in line[word_start:end] or bool(_UPSTREAM.search(line, 0, start))


def _is_written(rel: Path, line: str, start: int, end: int) -> bool:
    """A whole Python string literal ("notes/x.md"): a file the code writes or reads, not a citation."""
    quote = line[start - 1:start]
    return rel.suffix == ".py" and quote in ("'", '"') and line[end:end + 1] == quote


def citations(path: Path, root: Path) -> tuple[list[Citation], list[str]]:
    """The citations in one file, and the problems that are not about a target (forbidden paths, a
    section sign that follows no citation or no number)."""
    rel = path.relative_to(root)
    own = rel.name if rel.parent == REFERENCE_DIR and rel.suffix == ".md" else None
    found: list[Citation] = []
    problems: list[str] = []
    last: tuple[str, int] | None = None  # (target, line) of the latest citation, for a bare section
    for no, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        for m in _FORBIDDEN.finditer(line):
            problems.append(f"{rel}:{no}: points outside the repository ({m.group(0)!r}); cite docs/reference/")
        heads = [(m.start(), m.end(), m.group(0)) for m in _MD_TOKEN.finditer(line)
                 if not _is_external(line, m.start(), m.end()) and not _is_written(rel, line, m.start(), m.end())]
        heads += [(m.start(), m.end(), ALIASES[m.group(1)]) for m in _ALIAS.finditer(line)]
        heads = [h for h in sorted(heads) if Path(h[2]).name not in WRITTEN_NAMES]
        consumed: list[tuple[int, int]] = []
        for _, end, target in heads:
            after = re.match(rf"\s*:?\s*(?={SIGN})", line[end:])
            sections: list[str] = []
            if after:
                sections, stop = _chain(line, end + after.end())
                consumed.append((end + after.end(), stop))
            found.append(Citation(rel, no, target, tuple(sections)))
        for m in re.finditer(SIGN, line):
            if any(a <= m.start() < b for a, b in consumed):
                continue
            if _PLACEHOLDER.match(line, m.start()):
                continue
            sections, stop = _chain(line, m.start())
            consumed.append((m.start(), max(stop, m.end())))
            before = [target for start, _, target in heads if start < m.start()]
            if not sections:
                problems.append(f"{rel}:{no}: a section sign without a section number")
            elif before:
                found.append(Citation(rel, no, before[-1], tuple(sections)))
            elif own is not None:
                found.append(Citation(rel, no, own, tuple(sections)))
            elif last is not None and no - last[1] <= BARE_WINDOW:
                found.append(Citation(rel, no, last[0], tuple(sections)))
            else:
                problems.append(f"{rel}:{no}: {SIGN}{sections[0]} follows no reference file name")
        if heads:
            last = (heads[-1][2], no)
    return found, problems


def resolve(target: str, citing: Path, root: Path) -> Path | None:
    """The file a cited name or path means, or None when it does not exist."""
    written = Path(target)
    candidates = [root / citing.parent / written, root / written]
    if len(written.parts) == 1:
        candidates += [root / REFERENCE_DIR / written, root / "docs" / written]
    for c in candidates:
        if c.is_file() and c.resolve().is_relative_to(root.resolve()):
            return c
    return None


def numbered_headings(path: Path) -> set[str]:
    heads: set[str] = set()
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced and (m := _HEADING.match(line)):
            heads.add(m.group(1))
    return heads


def check(root: Path) -> list[str]:
    """Every problem with the citations under ``root``, as ``path:line: message`` lines."""
    problems: list[str] = []
    headings: dict[Path, set[str]] = {}
    for path in scanned_files(root):
        found, other = citations(path, root)
        problems += other
        for c in found:
            doc = resolve(c.target, c.path, root)
            if doc is None:
                problems.append(f"{c.path}:{c.line}: cites {c.target}, which is not in the repository")
                continue
            if doc not in headings:
                headings[doc] = numbered_headings(doc)
            for s in c.sections:
                if s not in headings[doc]:
                    problems.append(f"{c.path}:{c.line}: {c.target} has no section {SIGN}{s}")
    return problems


def test_every_citation_resolves():
    problems = check(repo_root())
    assert not problems, f"{len(problems)} unresolved citation(s):\n" + "\n".join(problems)


# --- the checker itself, on small trees in tmp_path -----------------------------------------------
S = SIGN
MD = ".md"


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


DOC = "# Doc\n\n## 1. One\n### 1.1 A\n### 1.2 B\n## 2. Two\n```\n## 3. not a heading (fenced)\n```\n## 4. Four\n"


def test_checker_accepts_the_citation_forms_in_use(tmp_path):
    root = _tree(tmp_path, {
        f"docs/reference/ocean_facts{MD}": DOC,
        f"docs/reference/ray_stack{MD}": DOC,
        f"docs/reference/own{MD}": f"{DOC}\nSee {S}1.2 and {S}4.\n| `ray_stack{MD}` | {S}1; {S}2 |\n",
        "pkg/a.py": "\n".join([
            f"x = 1  # facts {S}1.1, ocean_facts {S}2, ocean_facts{MD} {S}1.2.",
            f"# facts {S}1.1 / {S}1.2, facts {S}1.1/{S}1.2, facts {S}{S}1.1-1.2, facts {S}1-{S}2",
            f"# facts {S}1.1 step 2, {S}1.2 item 11; ray_stack{MD} {S}2, {S}4; issue",
            f"# ray_stack{MD}: {S}1 and (ray_stack{MD} {S}2, \"app-level writer\") and ray_stack{MD}",
            f"# official = ocean_facts {S}1.1 (ranges)",
            f"# sots = {S}1.2 (two lines below a citation); written: OUT/summary{MD}, ablation{MD}",
            f"# see https://example.org/README{MD} and ../shared/data/real_samples, TK's `lib/ocean{MD}`",
            f'log_text("# hi", "notes/hello{MD}")  # cited as `facts {S}N.M` or `ocean_facts {S}N`',
        ]) + "\n",
    })
    assert check(root) == []


def test_checker_reports_bad_citations(tmp_path):
    root = _tree(tmp_path, {
        f"docs/reference/ocean_facts{MD}": DOC,
        "pkg/a.py": "\n".join([
            f"x = 1  # facts {S}9.3",                      # no such section
            f"# facts {S}1.1, {S}3",                         # fenced '## 3.' is not a heading
            f"# facts {S}{S}1.1-1.9",                      # range end missing
            f"# nowhere{MD} and formats{MD} {S}1.4",       # files missing
            f"# see ../shared/reference/ray_stack{MD}",    # outside the repository (twice: the file too)
            "",
            "",
            "",
            "",
            f"# alone {S}1.1",                               # no citation within 3 lines
        ]) + "\n",
        "run.sh": "cat shared/reference/x\n",
        "Makefile": "doc:\n\tcat ../shared/notes.txt\n",
    })
    problems = check(root)
    expected = [
        f"pkg/a.py:1: ocean_facts{MD} has no section {S}9.3",
        f"pkg/a.py:2: ocean_facts{MD} has no section {S}3",
        f"pkg/a.py:3: ocean_facts{MD} has no section {S}1.9",
        f"pkg/a.py:4: cites nowhere{MD}, which is not in the repository",
        f"pkg/a.py:4: cites formats{MD}, which is not in the repository",
        "pkg/a.py:5: points outside the repository ('../shared/reference')",
        f"pkg/a.py:5: cites ../shared/reference/ray_stack{MD}, which is not in the repository",
        f"pkg/a.py:10: {S}1.1 follows no reference file name",
        "run.sh:1: points outside the repository ('shared/reference')",
        "Makefile:2: points outside the repository ('../shared/')",
    ]
    for e in expected:
        assert any(p.startswith(e) for p in problems), f"not reported: {e}\n" + "\n".join(problems)
    assert len(problems) == len(expected), "\n".join(problems)


@pytest.mark.parametrize("text, sections", [
    (f"{S}9.3.", ["9.3"]),
    (f"{S}12.1/{S}12.2)", ["12.1", "12.2"]),
    (f"{S}{S}7.3-7.4 x", ["7.3", "7.4"]),
    (f"{S}1-{S}4, paper", ["1", "4"]),
    (f"{S}4.1 step 2, {S}13.3 item 11.", ["4.1", "13.3"]),
    (f"{S}9.1, 13 frames", ["9.1"]),
    (f"{S}2, \"app-level\"", ["2"]),
])
def test_section_chains(text, sections):
    assert _chain(text, 0)[0] == sections
