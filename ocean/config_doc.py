"""The configuration reference (``docs/configuration.md``), generated from ``ocean/config.py`` itself.

Each field's documentation is the comment block above it and its inline comment in the source, and its
allowed values are what the config checks (``ocean.config.describe``), so the reference cannot drift from the code; ``tests/unit/test_config.py`` checks that the committed file is current.
Regenerate with ``ocean config --reference > docs/configuration.md``.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json

from ocean import config as config_module


def _field_comments() -> dict[tuple[str, str], str]:
    source = inspect.getsource(config_module)
    lines = source.splitlines()
    out: dict[tuple[str, str], str] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        for stmt in node.body:
            if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
                continue
            parts = []
            i = stmt.lineno - 2
            block = []
            while i >= 0 and lines[i].strip().startswith("#"):
                block.insert(0, lines[i].strip().lstrip("#").strip())
                i -= 1
            parts += block
            end = lines[(stmt.end_lineno or stmt.lineno) - 1]
            if "#" in end:
                parts.append(end.split("#", 1)[1].strip())
            out[(node.name, stmt.target.id)] = " ".join(p for p in parts if p)
    return out


def _fmt(value) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return f"`{text}`".replace("|", "\\|")


def reference_markdown() -> str:
    comments = _field_comments()
    paper, smoke = config_module.paper(), config_module.smoke()
    rows = [
        "# Configuration reference",
        "",
        "Generated from `ocean/config.py` by `ocean config --reference`; do not edit by hand.",
        "Set any value with `--set KEY=VALUE` on `ocean train`, `ocean prepare`, `ocean info`, ... "
        "(unknown keys are rejected).",
        "",
        "## Configuration files",
        "",
        "`ocean config [--preset NAME] [--format yaml|json]` prints a whole configuration, YAML by default. "
        "Every command that takes `--set` also takes `--config FILE`: a YAML or JSON file of that schema "
        "(detected by the extension, `.json` / `.yaml` / `.yml`, else by the text), complete or partial. "
        "The layers are: `--preset` (default paper) -> `--config FILE` (the keys it holds replace the "
        "preset's; a complete file gives exactly the configuration it holds, so "
        "`ocean config --preset paper > my.yaml` and `--config my.yaml` round-trip) -> `--set` items in "
        "order -> shortcut flags such as `--epochs`.",
        "",
        "The tracking commands (`ocean track`, `ocean evaluate`) use only the file's `tracker` section, on top "
        "of the checkpoint's tracker section and the `--benchmark` preset, then `--tracker-config FILE` "
        "(tracker keys, flat or under `tracker:`, as `ocean tune-tracker` writes them) and `--set tracker.KEY=VALUE`.",
        "",
        "Every value is checked wherever a configuration enters (files, `--set`, `--tracker-config`, checkpoints' "
        "stored configurations, a configuration unpickled from a Ray payload): its type (a file's `\"3\"` is "
        "not an integer; YAML `1e-3` is a number), its choices and its range, as the column *allowed* says. A bad "
        "value stops the command with one line naming the key, e.g. `ocean info: error: --set optim.epochs: "
        "expected a positive integer, got 'abc'`, and exit status 2.",
        "",
    ]

    def walk(cfg_p, cfg_s, prefix: str) -> None:
        sections = []
        table = []
        for f in dataclasses.fields(cfg_p):
            vp, vs = getattr(cfg_p, f.name), getattr(cfg_s, f.name)
            if dataclasses.is_dataclass(vp):
                sections.append((f.name, vp, vs))
                continue
            doc = comments.get((type(cfg_p).__name__, f.name), "")
            allowed = config_module.describe(*config_module._spec(type(cfg_p), f.name))
            vp_j = json.loads(json.dumps(vp)) if isinstance(vp, (tuple, dict)) else vp
            vs_j = json.loads(json.dumps(vs)) if isinstance(vs, (tuple, dict)) else vs
            table.append(f"| `{prefix}{f.name}` | {_fmt(vp_j)} | {_fmt(vs_j)} | {allowed.replace('|', '/')} "
                         f"| {doc.replace('|', '/')} |")
        if table:
            rows.append(f"## `{prefix.rstrip('.') or 'top level'}` ({type(cfg_p).__name__})")
            rows.append("")
            rows.append("| key | paper | smoke | allowed | meaning and source |")
            rows.append("|---|---|---|---|---|")
            rows.extend(table)
            rows.append("")
        for name, vp, vs in sections:
            walk(vp, vs, f"{prefix}{name}.")

    walk(paper, smoke, "")
    rows.extend(_differences())
    rows.append("## Tracker presets per benchmark (`--benchmark NAME`; ocean_facts §9.3)")
    rows.append("")
    online = config_module.ONLINE_TRACKER_PRESETS
    keys = sorted({k for v in [*config_module.TRACKER_PRESETS.values(), *online.values()] for k in v})
    rows.append("| benchmark | " + " | ".join(keys) + " |")
    rows.append("|---" * (len(keys) + 1) + "|")
    presets = [*config_module.TRACKER_PRESETS.items(),
               *((f"{n} with tracker.online", {**config_module.TRACKER_PRESETS[n], **v}) for n, v in online.items())]
    for name, values in presets:
        rows.append(f"| {name} | " + " | ".join(_fmt(values[k]) if k in values else "" for k in keys) + " |")
    rows.append("")
    rows.append("With `tracker.online=true` (from any layer) a VOT preset takes the official online entry instead "
                "(ocean_facts §10.4: no p_o, ω' = `online_weight`); the other presets stay and the online map is "
                "fused on top. `--set` values still come last.")
    return "\n".join(rows) + "\n"


_KINDS = {
    "option": "the paper preset does what the official code does; the fix is an option",
    "guard": "on in every preset; acts only where the official code would crash, stall or go non-finite",
    "rule": "a project rule without an official counterpart",
    "numeric": "the same computation up to rounding",
    "substitute": "the official part cannot be rebuilt from public material; this runs instead",
    "unreachable": "an official quirk the paper preset never triggers",
}


def _differences() -> list[str]:
    """The "differences from the official code" section, from ``ocean.config.OFFICIAL_DIFFERENCES``."""
    paper, smoke = config_module.flatten(config_module.paper()), config_module.flatten(config_module.smoke())
    rows = [
        "## Deliberate differences from the official code",
        "",
        "Every known place where this project does not do what the official code (TracKit HEAD, "
        "docs/reference/ocean_facts.md) does, from `ocean.config.OFFICIAL_DIFFERENCES`. Kinds: "
        + "; ".join(f"*{k}*: {v}" for k, v in _KINDS.items()) + ". For an *option* the paper column is the "
        "official value (tests/unit/test_official_defaults.py holds it there) and `--set KEY=FIX` selects the "
        "project's fix; the smoke preset, trained from a random backbone on a CPU, keeps the fixes its column "
        "shows.",
        "",
        "| topic | kind | official code | this project | key (paper / smoke; fix) | why |",
        "|---|---|---|---|---|---|",
    ]
    for d in config_module.OFFICIAL_DIFFERENCES:
        key = ""
        if d.key:
            key = f"`{d.key}`"
            if d.key in paper:
                key += f" ({_fmt(paper[d.key])} / {_fmt(smoke[d.key])}"
                key += f"; {_fmt(d.fix)})" if d.kind == "option" else ")"
        cells = [d.topic, d.kind, d.official, d.project, key, d.reason]
        rows.append("| " + " | ".join(c.replace("|", "/") if c is not key else c for c in cells) + " |")
    rows.append("")
    return rows
