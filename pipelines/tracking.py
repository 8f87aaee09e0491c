"""MLflow helpers shared by the training, evaluation and tuning jobs.

* :func:`tracking_uri`: ``--mlflow-uri``, else ``$MLFLOW_TRACKING_URI``, else a local sqlite store
  (``OUT/mlflow.db`` when the output folder is local, ``./mlruns.db`` otherwise), always absolute so a Ray
  worker whose working directory differs logs to the same store (ray-project/ray#45456).
* :func:`ensure_experiment`: creates (and, for sqlite, migrates) the store once on the driver before any
  worker touches it: parallel first uses race on sqlite's schema migration (ray_stack.md §5,
  mlflow#6490).
* :func:`config_params`: the flattened config (``optim.base_lr`` ...) as MLflow params, values
  stringified and cut to MLflow's 6000-character limit.
* :func:`code_version` / :func:`run_tags`: git sha (``-dirty`` when the tree has changes), package version.
* :func:`scrub`: drops credentials from params / tags: keys that name a secret, password, token or access
  key, and URIs carrying a password or signed query (``user:pw@host``, ``?X-Amz-Signature=``) are replaced
  by ``<redacted>``.

Only the driver and rank 0 log; these helpers never read credentials themselves.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import urllib.parse
from pathlib import Path
from typing import Any

from ocean.config import flatten
from ocean.storage import is_uri

MAX_PARAM_CHARS = 6000  # MLflow's param value limit (mlflow.utils.validation MAX_PARAM_VAL_LENGTH)
REDACTED = "<redacted>"
_SECRET_KEY = re.compile(r"(secret|password|passwd|token|credential|access[_-]?key|session[_-]?key|api[_-]?key)",
                         re.IGNORECASE)
_SECRET_QUERY = re.compile(r"(signature|credential|security-token|secret|password|token|access_key)", re.IGNORECASE)


def tracking_uri(explicit: str | None = None, out: str | None = None) -> str:
    """The tracking URI to use (module docstring), absolute; a plain path becomes ``sqlite:///ABS``."""
    uri = explicit or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        if out is not None and (not is_uri(out) or str(out).startswith("file://")):
            folder = Path(urllib.parse.urlparse(out).path if is_uri(out) else out).expanduser().resolve()
            uri = f"sqlite:///{folder / 'mlflow.db'}"
        else:
            uri = f"sqlite:///{Path('mlruns.db').resolve()}"
    if "://" not in uri:  # a bare file name or folder
        path = Path(uri).expanduser().resolve()
        uri = f"sqlite:///{path}" if path.suffix == ".db" else f"file://{path}"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        rel = uri[len("sqlite:///"):]
        uri = f"sqlite:///{Path(rel).expanduser().resolve()}"
    return uri


def ensure_experiment(uri: str, name: str) -> str:
    """Create the store (sqlite: its folder and schema) and the experiment once; returns its id."""
    from mlflow.tracking import MlflowClient

    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    artifact_location = None
    if uri.startswith("sqlite:///"):  # artifacts next to the database, not in the working directory
        artifact_location = str(Path(uri[len("sqlite:///"):]).parent / "mlartifacts" / name)
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except Exception:  # created concurrently by another driver
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def _secret_uri(text: str) -> bool:
    if "://" not in text:
        return False
    try:
        parsed = urllib.parse.urlparse(text)
    except ValueError:
        return False
    if parsed.password:
        return True
    return any(_SECRET_QUERY.search(k) for k in urllib.parse.parse_qs(parsed.query))


def scrub(values: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``values`` with credentials replaced by ``<redacted>`` (module docstring)."""
    out = {}
    for k, v in values.items():
        if _SECRET_KEY.search(str(k)) or (isinstance(v, str) and _secret_uri(v)):
            out[k] = REDACTED
        else:
            out[k] = v
    return out


def config_params(cfg, extra: dict[str, Any] | None = None) -> dict[str, str]:
    """Flattened config (plus ``extra`` run settings) as MLflow params, scrubbed and stringified."""
    params = {**flatten(cfg), **(extra or {})}
    return {k: str(v)[:MAX_PARAM_CHARS] for k, v in scrub(params).items()}


def code_version(repo: str | Path | None = None) -> str:
    """``git rev-parse HEAD`` of the source tree (``-dirty`` with uncommitted changes), else ``unknown``."""
    root = Path(repo) if repo else Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def run_tags(**extra: Any) -> dict[str, str]:
    """Tags every run carries: ``ocean.code_version``, ``ocean.package_version``, plus ``extra``."""
    try:
        from importlib.metadata import version

        pkg = version("ocean-ray")
    except Exception:
        pkg = "unknown"
    tags = {"ocean.code_version": code_version(), "ocean.package_version": pkg, **extra}
    return {k: str(v)[:MAX_PARAM_CHARS] for k, v in scrub(tags).items()}


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def find_run(uri: str, experiment_id: str, tag: str, value: str) -> str | None:
    """The newest run of the experiment whose tag ``tag`` equals ``value`` (None if there is none)."""
    from mlflow.tracking import MlflowClient

    runs = MlflowClient(tracking_uri=uri).search_runs(
        [experiment_id], filter_string=f"tags.`{tag}` = '{value}'", order_by=["attributes.start_time DESC"],
        max_results=1)
    return runs[0].info.run_id if runs else None


def public_uri(uri: str) -> str:
    """``uri`` without its query string and user info (for logs, params and tags)."""
    if "://" not in uri:
        return uri
    parsed = urllib.parse.urlparse(uri)
    if not parsed.netloc:  # sqlite:////abs/x.db, file:///x: nothing secret; urlunparse would drop a slash
        return uri.split("?", 1)[0]
    netloc = parsed.hostname or ""
    if parsed.port:
        netloc += f":{parsed.port}"
    return urllib.parse.urlunparse(parsed._replace(netloc=netloc, query=""))
