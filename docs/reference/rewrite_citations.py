"""One-off rewrite of the old citation forms into section citations of docs/reference/.

Run from anywhere: ``python docs/reference/rewrite_citations.py [REPO_ROOT]``. Idempotent: a second run
changes nothing. It prints every changed line, then the citations it could not map.

1. ``formats.md`` citations by name (``formats.md "COCO 2017"``, ``formats.md GOT-10k``) or bare
   (``(formats.md)``, ``formats.md: 8-digit``) become section citations such as ``formats.md §1.5``.
   Each citing line is found by a piece of its own text (files and line numbers may have moved since),
   so the section fits what that line states; a quoted name no line entry covers falls back to NAMES.
2. Paths to the reference notes in the shared folder beside the checkout, their old home outside the
   repository, become the same names under ``docs/reference/``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SIGN = "\u00a7"
SUFFIXES = {".py", ".md", ".sh", ".yaml", ".yml", ".toml"}
HERE = Path(__file__).resolve()
SKIP = {HERE.name, "test_reference_docs.py"}  # both spell out old forms on purpose

# Sections of formats.md, by the names the old citations used.
NAMES = {
    "Coordinates": "0", "Training datasets": "1", "GOT-10k": "1.1", "LaSOT": "1.2", "ImageNet VID": "1.3",
    "ImageNet DET": "1.4", "COCO 2017": "1.5", "COCO": "1.5", "YouTube-BoundingBoxes": "1.6", "YT-BB": "1.6",
    "Benchmarks": "2", "OTB-100": "2.1", "OTB": "2.1", "VOT": "2.2", "VOT results": "2.2", "LaSOT test": "2.4",
}


def _s(*sections: str) -> str:
    return f" / {SIGN}".join(sections)


# (a piece of the citing line's text, the old citation in it, its sections). A piece ending in "$" must
# end the line. Longer pieces first where one contains another.
LINES = [
    ("at 1 Hz, formats.md)", "formats.md)", ["1.6"]),  # YT-BB video frames
    ("the top-left pixel is (0, 0) (formats.md)", "(formats.md)", ["0"]),
    ("before computing IoU (formats.md GOT-10k)", "formats.md GOT-10k", ["2.3"]),  # got10k toolkit bound
    ("# formats.md / got10k toolkit: 101 thresholds", "formats.md /", ["2.3"]),
    ("# OTB is 1-based (formats.md, facts", "(formats.md,", ["2.1"]),
    ("present when neither flag is 1 (formats.md LaSOT)", "formats.md LaSOT", ["1.2"]),
    ("# LaSOT is 1-based (formats.md)", "(formats.md)", ["1.2"]),
    ("/ formats.md VOT: re-initialise", "formats.md VOT:", ["2.2"]),
    ("(formats.md VOT results; ocean_facts", "formats.md VOT results;", ["2.2"]),
    ("native LaSOT flag files are one comma-separated line (formats.md)", "(formats.md)", ["1.2"]),
    ("benchmarks in the real on-disk layouts (formats.md)", "(formats.md)", ["1", "2"]),
    ('f"{i + 1:08d}.jpg", img)  # formats.md: 8-digit, 1-based', "formats.md:", ["1.1"]),  # GOT-10k writer
    ("# formats.md: eighths visible", "formats.md:", ["1.1"]),
    ("absent-frame boxes vary (formats.md)", "(formats.md)", ["1.2"]),
    ('{int(bh)}")  # 1-based (formats.md)', "(formats.md)", ["1.2"]),  # LaSOT writer
    ("VOC inclusive integer corners of a box clipped to the image (formats.md)", "(formats.md)", ["1.3"]),
    ("trackers skip them (formats.md)", "(formats.md)", ["1.5"]),
    ("(formats.md: 1 Hz)", "formats.md:", ["1.6"]),
    ("# formats.md: annotations at 1 Hz", "formats.md:", ["1.6"]),
    ("# no header (formats.md)", "(formats.md)", ["1.6"]),
    ("# formats.md: 4-digit, 1-based", "formats.md:", ["2.1"]),
    ("real copies use commas, tabs or spaces (formats.md)", "(formats.md)", ["2.1"]),
    ("each dataset's own layout (formats.md)", "(formats.md)", ["1"]),
    ('# formats.md: 8-digit, 1-based file names', "formats.md:", ["1.1"]),  # GOT-10k reader
    ('stem = f"{i + 1:08d}"  # formats.md: 8-digit, 1-based$', "formats.md:", ["1.2"]),  # LaSOT reader
    ("-> 0-based corners (formats.md)", "(formats.md)", ["1.2"]),
    ("(formats.md): each of its tracks is one", "(formats.md)", ["1.6"]),
    ("# formats.md: the ten CSV columns", "formats.md:", ["1.6"]),
    ("# formats.md names present / absent", "formats.md names", ["1.6"]),
    ("# formats.md: x, x, y, y order", "formats.md:", ["1.6"]),
    ("# GOT-10k is 0-based x,y,w,h (formats.md)", "(formats.md)", ["1.1"]),
    ("datasets' own definition (formats.md, GOT-10k / LaSOT)", "formats.md, GOT-10k / LaSOT", ["1.1", "1.2"]),
    ("(formats.md; facts", "(formats.md;", ["1.5"]),  # COCO crowd / non-positive boxes
    ("(GOT-10k and LaSOT, formats.md)", "formats.md)", ["1.1", "1.2"]),
    ("``key: value`` lines (formats.md)", "(formats.md)", ["1.1"]),
]


def _new(old: str, sections: list[str]) -> str:
    """``old`` with its name (if any) replaced by the sections: "(formats.md," -> "(formats.md §2.1,"."""
    head, _, tail = old.partition("formats.md")
    tail = re.sub(r"^,? (?:GOT-10k / LaSOT|GOT-10k|LaSOT|VOT results|VOT)", "", tail)
    return f"{head}formats.md {SIGN}{_s(*sections)}{tail}"


_QUOTED = re.compile(r'formats\.md "([^"]+)"')
# The folder name is split so that this file does not itself point there.
_SHARED = re.compile(r"(?:\.\./)?shared/" + r"reference/(\w+\.md)")
_BARE = re.compile(rf"formats\.md(?!\s*{SIGN})")


def files(root: Path) -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                         capture_output=True, check=True).stdout.decode()
    keep = []
    for name in sorted(n for n in out.split("\0") if n):
        p = root / name
        if ".venv" in Path(name).parts or p.name in SKIP or not p.is_file():
            continue
        if p.suffix in SUFFIXES or p.name == "Makefile":
            keep.append(p)
    return keep


def rewrite_line(line: str, hits: dict[str, int]) -> str:
    for piece, old, sections in LINES:
        end = piece.endswith("$")
        text = piece[:-1] if end else piece
        if (line.rstrip().endswith(text) if end else text in line) and old in line:
            line = line.replace(old, _new(old, sections), 1)
            hits[piece] += 1
    line = _QUOTED.sub(lambda m: f"formats.md {SIGN}{NAMES[m.group(1)]}" if m.group(1) in NAMES else m.group(0),
                       line)
    return _SHARED.sub(r"docs/reference/\1", line)


def main(root: Path) -> int:
    for _, old, sections in LINES:  # idempotent: a rewritten citation never matches its entry again
        assert old not in _new(old, sections), old
    hits = dict.fromkeys((piece for piece, _, _ in LINES), 0)
    left: list[str] = []
    for path in files(root):
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines(keepends=True)
        changed = False
        for i, line in enumerate(lines):
            new = rewrite_line(line, hits)
            if new != line:
                print(f"{path.relative_to(root)}:{i + 1}:\n  - {line.strip()}\n  + {new.strip()}")
                lines[i], changed = new, True
            for m in _BARE.finditer(lines[i]):
                if _QUOTED.match(lines[i], m.start()) or path.parts[-3:-1] == ("docs", "reference"):
                    continue
                left.append(f"{path.relative_to(root)}:{i + 1}: {lines[i].strip()}")
            for m in _QUOTED.finditer(lines[i]):
                left.append(f"{path.relative_to(root)}:{i + 1}: unknown name {m.group(1)!r}")
        if changed:
            path.write_text("".join(lines), encoding="utf-8")
    applied = sum(hits.values())
    print(f"\n{applied} of {len(LINES)} line entries applied" + ("" if applied else " (already rewritten)"))
    for piece, n in hits.items():
        if n > 1 or (applied and n == 0):
            print(f"entry applied {n} times (expected once): {piece!r}")
    if left:
        print("left as they are (map them by hand):\n  " + "\n  ".join(left))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else HERE.parents[2]))
