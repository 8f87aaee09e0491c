"""The deployment files, checked offline: they cannot be launched here (no cloud, no image registry, no
Kubernetes), so each is put through the check its own tool would make first, and all of them against one
another and against pyproject.toml and the README (docs/reference/ray_stack.md §7, §10).

* ``cluster.yaml``: Ray's cluster-launcher validation (``prepare_config`` + ``validate_config``, no cloud call);
  the nodes run the project's image on an AMI that fits the pinned torch, install nothing at boot, and share
  the launching machine's Ray token.
* ``Dockerfile`` / ``.dockerignore``: the base image is the ``rayproject/ray`` image of the pinned Ray and a
  Python that ``requires-python`` allows, every pin is pyproject.toml's, the project is installed with its
  packages copied in, and the build context keeps exactly what the build copies.
* ``deploy/kuberay/``: every manifest against the OpenAPI schema of its KubeRay v1.7 CRD
  (``../shared/data/kuberay_crds/``; skipped when absent), unknown fields refused as ``kubectl apply``'s
  strict field validation does; the token and object-store Secrets, images and job commands agree with
  cluster.yaml and the README, and each job's arguments parse with that job's own parser.

Each checker is also shown a broken copy, which it must refuse.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from functools import cache
from pathlib import Path

import pytest
import yaml
from conftest import REPO, SHARED
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the dev extra brings tomli
    import tomli as tomllib

CRD_DIR = SHARED / "data" / "kuberay_crds"
KUBERAY = REPO / "deploy" / "kuberay"
README = REPO / "README.md"
TOKEN_FILE = "~/.ray/auth_token"  # where Ray 2.60 looks for the token by default (ray_stack.md §10)
DLAMI_SSM = "resolve:ssm:/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-24.04/"
JOBS = ("prepare", "train", "evaluate")


# ------------------------------------------------------------------ shared readers

@cache
def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def pins(extras: tuple[str, ...] = ()) -> dict[str, str]:
    """``{canonical name: version}`` of the ``==`` pins of pyproject.toml (dependencies, plus ``extras``)."""
    project = pyproject()["project"]
    reqs = list(project["dependencies"]) + [r for e in extras for r in project["optional-dependencies"][e]]
    out = {}
    for text in reqs:
        req = Requirement(text)
        exact = [s.version for s in req.specifier if s.operator == "=="]
        if exact:
            out[canonicalize_name(req.name)] = exact[0]
    return out


def load_cluster_yaml() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def manifests() -> dict[str, dict]:
    return {p.name: yaml.safe_load(p.read_text()) for p in sorted(KUBERAY.glob("*.yaml"))}


def cluster_block() -> str:
    """The README's cluster block (``readme-test: cluster-env``), ``\\`` continuations joined."""
    text = README.read_text()
    after = text[text.index("<!-- readme-test: cluster-env"):]
    return re.search(r"```[a-z]*\n(.*?)```", after, re.S).group(1).replace("\\\n", " ")


def readme_job_commands() -> dict[str, list[str]]:
    """``{job: argv}`` of the README's ``ray job submit ... -- python -m jobs.<job> ...`` lines."""
    out = {}
    for line in cluster_block().splitlines():
        if "ray job submit" in line:
            argv = shlex.split(line.split(" -- ", 1)[1], comments=True)
            out[argv[2].removeprefix("jobs.")] = argv
    return out


def project_image() -> str:
    """The image cluster.yaml runs: ``REGISTRY/ocean-ray:VERSION``, VERSION pyproject.toml's (the registry is
    yours: README); the KubeRay manifests must name the same one."""
    image = load_cluster_yaml()["docker"]["image"]
    assert re.fullmatch(r"[a-z0-9][a-z0-9._/:-]*/ocean-ray:" + re.escape(pyproject()["project"]["version"]), image)
    return image


# ------------------------------------------------------------------ cluster.yaml

def validate_cluster(cfg: dict) -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(cfg)))


def test_cluster_yaml_passes_rays_validation():
    validate_cluster(load_cluster_yaml())


@pytest.mark.parametrize("breakage", ["typo", "bad_head", "too_many_min", "docker_typo", "mounts_as_list"])
def test_cluster_validation_catches_mistakes(breakage):
    cfg = load_cluster_yaml()
    if breakage == "typo":
        cfg["available_node_types"]["cpu_worker"]["min_worker"] = 1
    elif breakage == "bad_head":
        cfg["head_node_type"] = "nope"
    elif breakage == "too_many_min":
        cfg["available_node_types"]["cpu_worker"]["min_workers"] = 20
    elif breakage == "docker_typo":
        cfg["docker"]["imgae"] = cfg["docker"].pop("image")
    else:
        cfg["file_mounts"] = [TOKEN_FILE]
    with pytest.raises(Exception):  # noqa: B017 - jsonschema.ValidationError, ValueError or a merge error
        validate_cluster(cfg)


def test_cluster_nodes_run_the_image_and_install_nothing():
    cfg = load_cluster_yaml()
    project_image()
    assert cfg["docker"].get("pull_before_run") is True
    for key in ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands"):
        assert not any("pip" in c or "conda" in c for c in cfg.get(key, [])), key
    types = cfg["available_node_types"]
    assert set(types) == {"head", "cpu_worker", "gpu_worker"}
    assert types["head"]["resources"] == {"CPU": 0}  # nothing heavy on the head
    assert types["gpu_worker"]["node_config"]["InstanceType"].startswith("g")
    for name, node in types.items():
        # Ray's latest_dlami is Ubuntu 18.04 with CUDA 11.2, older than torch 2.14.1's CUDA 13.0 needs
        assert node["node_config"]["ImageId"].startswith(DLAMI_SSM), name


def test_cluster_token_reaches_every_node():
    cfg = load_cluster_yaml()
    assert cfg["file_mounts"].get(TOKEN_FILE) == TOKEN_FILE  # the launching machine's token, on every node
    starts = cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"]
    ray_starts = [c for c in starts if "ray start" in c]
    assert len(ray_starts) == 2 and all("RAY_AUTH_MODE=token" in c for c in ray_starts)
    assert "--dashboard-host=127.0.0.1" in " ".join(cfg["head_start_ray_commands"])  # reached by SSH tunnel
    text = (REPO / "cluster.yaml").read_text()
    assert "AWS_SECRET_ACCESS_KEY" not in text and "RAY_AUTH_TOKEN=" not in text


def test_token_lands_in_the_containers_home():
    """Ray's own `docker run` line for this config bind-mounts the synced token at the image's ~/.ray/auth_token
    (/home/ray in rayproject/ray images), where `ray start` inside the container reads it."""
    from ray.autoscaler._private.docker import docker_start_cmds

    cfg = load_cluster_yaml()
    cmd = docker_start_cmds("ubuntu", cfg["docker"]["image"], cfg["file_mounts"], cfg["docker"]["container_name"],
                            cfg["docker"]["run_options"], cfg["cluster_name"], "/home/ray", "docker")
    assert f"-v /tmp/ray_tmp_mount/{cfg['cluster_name']}/~/.ray/auth_token:/home/ray/.ray/auth_token " in cmd
    assert "--net=host" in cmd and cmd.split()[-2] == cfg["docker"]["image"]


def test_token_file_is_where_ray_reads_it(tmp_path, monkeypatch):
    """What the README's `ray get-auth-token --generate` writes is the file cluster.yaml mounts, and Ray 2.60's
    loader reads it there when RAY_AUTH_TOKEN and RAY_AUTH_TOKEN_PATH are unset; RAY_AUTH_TOKEN (what the
    README gives another machine) comes first."""
    from ray._private.authentication.authentication_token_setup import generate_and_save_token
    from ray._raylet import AuthenticationTokenLoader

    loader = AuthenticationTokenLoader.instance()
    try:
        monkeypatch.setenv("HOME", str(tmp_path))
        monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
        monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
        loader.reset_cache()
        assert not loader.has_token(ignore_auth_mode=True)
        generate_and_save_token()  # what `ray get-auth-token --generate` runs when no token is found
        written = Path(TOKEN_FILE).expanduser()
        assert written.parent.parent == tmp_path and re.fullmatch(r"[0-9a-f]{64}", written.read_text())
        loader.reset_cache()
        assert loader.get_raw_token(ignore_auth_mode=True) == written.read_text()
        monkeypatch.setenv("RAY_AUTH_TOKEN", "f" * 64)
        loader.reset_cache()
        assert loader.get_raw_token(ignore_auth_mode=True) == "f" * 64
    finally:
        monkeypatch.undo()
        loader.reset_cache()  # the process's own token again


def test_readme_tells_how_a_client_gets_the_token():
    text = README.read_text()
    assert "ray get-auth-token --generate" in text and TOKEN_FILE in text  # AWS: made once, then mounted
    assert "export RAY_AUTH_TOKEN=" in text  # another machine, or KubeRay's Secret
    assert "RAY_AUTH_MODE=token" in cluster_block()  # every client command runs in token mode
    (env_line,) = re.findall(r"ENV=.*?\)'\)", cluster_block(), re.S)
    assert "MLFLOW_TRACKING_URI" in env_line and "RAY_AUTH" not in env_line  # the token never in a job's env


# ------------------------------------------------------------------ Dockerfile and .dockerignore

def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs, comments dropped and ``\\`` continuations joined."""
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for ln in joined.splitlines():
        if ln.strip():
            word, _, rest = ln.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def base_image(instr: list[tuple[str, str]]) -> str:
    args = dict(a.split("=", 1) for w, a in instr if w == "ARG" and "=" in a)
    image = next(a for w, a in instr if w == "FROM").split()[0]
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m.group(1) or m.group(2)], image)


def pip_installs(instr: list[tuple[str, str]]) -> list[list[str]]:
    """The argument lists of every ``pip install`` in the RUN steps (options included)."""
    out = []
    for word, args in instr:
        if word == "RUN":
            for part in re.split(r"&&|;", args):
                toks = shlex.split(part)
                if toks[:2] == ["pip", "install"] or toks[1:3] == ["-m", "pip"] and "install" in toks:
                    out.append(toks[toks.index("install") + 1:])
    return out


def dockerfile_problems(text: str) -> list[str]:
    """What in a Dockerfile disagrees with pyproject.toml (empty: nothing)."""
    problems = []
    instr = dockerfile_instructions(text)
    project = pyproject()["project"]
    pinned = pins(("gpu",))
    m = re.fullmatch(r"rayproject/ray:([\d.]+)-py(\d)(\d+)-(\w+)", base_image(instr))
    if not m:
        return [f"base image {base_image(instr)!r} is not a rayproject/ray RAY-pyXY-PLATFORM image"]
    if m.group(1) != pinned["ray"]:
        problems.append(f"base image Ray {m.group(1)} != pinned {pinned['ray']}")
    python = f"{m.group(2)}.{m.group(3)}"
    if python not in SpecifierSet(project["requires-python"]):
        problems.append(f"base image Python {python} outside requires-python {project['requires-python']}")
    if m.group(4) != "cu130":  # torch 2.14.1 from PyPI is the CUDA 13.0 build (ray_stack.md §1)
        problems.append(f"base image platform {m.group(4)} is not cu130")
    installs = pip_installs(instr)
    named = {}
    for args in installs:
        for tok in args:
            if "==" in tok:
                req = Requirement(tok)
                named[canonicalize_name(req.name)] = str(req.specifier).removeprefix("==")
    for name, version in named.items():
        if pinned.get(name) != version:
            problems.append(f"{name}=={version} is not pyproject.toml's pin ({pinned.get(name)})")
    for name in ("torch", "torchvision"):  # the CUDA stack's own layer
        if name not in named:
            problems.append(f"{name} is not installed with its pin")
    own = [(a, _project_extras(t)) for a in installs for t in a if _project_extras(t) is not None]
    extras = set().union(*(e for _, e in own))
    if not own:
        problems.append("the project itself (`pip install .[gpu,export]`) is not installed")
    elif any("-e" in a or "--editable" in a for a, _ in own):
        problems.append("the project is installed editable")
    else:
        if "gpu" not in extras:
            problems.append("the gpu extra (GPU system metrics) is not installed")
        if "export" not in extras:
            problems.append("the export extra (onnxruntime for --runtime onnx) is not installed")
    copied = {Path(src).as_posix().rstrip("/") for w, a in instr if w == "COPY"
              for src in [t for t in shlex.split(a) if not t.startswith("--")][:-1]}
    needed = {"pyproject.toml", project["readme"]} | {
        inc.rstrip("*") for inc in pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]}
    for path in sorted(needed - copied):
        problems.append(f"{path} is not copied into the image")
    return problems


def _project_extras(token: str) -> set[str] | None:
    """The extras of a ``.`` / ``.[a,b]`` install argument (the project itself), else None."""
    m = re.fullmatch(r"\.(?:\[([\w,\s-]*)\])?", token)
    return None if m is None else {e.strip() for e in (m.group(1) or "").split(",") if e.strip()}


def test_dockerfile_matches_pyproject():
    assert dockerfile_problems((REPO / "Dockerfile").read_text()) == []


@pytest.mark.parametrize("old,new", [
    ("torch==2.14.1", "torch==2.14.0"),
    (" torchvision==0.29.1", ""),
    ("rayproject/ray:2.60.0-", "rayproject/ray:2.59.0-"),
    ("-py311-", "-py39-"),
    ("-cu130", "-cu121"),
    ('".[gpu,export]"', "-e ."),
    ('".[gpu,export]"', "numpy==1.26.4 ."),
    ('".[gpu,export]"', '".[gpu]"'),
    ("COPY --chown=ray:users jobs ./jobs\n", ""),
])
def test_dockerfile_check_refuses_a_broken_copy(old, new):
    text = (REPO / "Dockerfile").read_text()
    assert old in text
    assert dockerfile_problems(text.replace(old, new, 1))


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders decides."""
    def regex(p: str) -> re.Pattern:
        out = ""
        for part in re.split(r"(\*\*/|\*\*|\*|\?)", p):
            out += {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(part, re.escape(part))
        return re.compile(out)

    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    excluded = False
    for raw in patterns:
        neg = raw.startswith("!")
        pat = raw.lstrip("!").strip("/")
        if any(regex(pat).fullmatch(p) for p in prefixes):
            excluded = not neg
    return excluded


def test_dockerignore_keeps_what_the_build_copies():
    patterns = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]
    instr = dockerfile_instructions((REPO / "Dockerfile").read_text())
    for w, a in instr:
        if w == "COPY":
            for src in [t for t in shlex.split(a) if not t.startswith("--")][:-1]:
                probe = src.rstrip("/") + ("/__init__.py" if (REPO / src).is_dir() else "")
                assert not dockerignore_excludes(patterns, probe), probe
    for heavy in (".venv/bin/python", ".git/HEAD", "tests/conftest.py", "mlruns.db", "mlartifacts/x/y.json",
                  "ocean-work/run/epoch-0001.pt", "ocean/__pycache__/model.cpython-311.pyc", "docs/configuration.md"):
        assert dockerignore_excludes(patterns, heavy), heavy
    assert dockerignore_excludes(patterns + ["!tests/"], "tests/conftest.py") is False  # the matcher itself


def build_context(dest: Path) -> list[str]:
    """Copy the repository's files that .dockerignore lets into a build context to ``dest``; their paths."""
    patterns = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                                capture_output=True, check=True, timeout=60).stdout.decode().split("\0")
    except (OSError, subprocess.SubprocessError):
        pytest.skip("git cannot list the repository's files")
    kept = sorted(n for n in listed if n and (REPO / n).is_file() and not dockerignore_excludes(patterns, n))
    for name in kept:
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, dest / name)
    return kept


def test_the_build_context_builds_the_project(tmp_path):
    """What the Dockerfile's `pip install ".[gpu,export]"` builds, from exactly the files .dockerignore sends: a wheel
    with the four packages and every pin of pyproject.toml (built here offline, with this setuptools)."""
    ctx = tmp_path / "ctx"
    kept = build_context(ctx)
    assert "pyproject.toml" in kept and not any(n.startswith(("tests/", ".venv/", ".git/")) for n in kept)
    out = subprocess.run([sys.executable, "-c", "import sys, setuptools.build_meta as b; print(b.build_wheel(sys.argv[1]))",
                          str(tmp_path / "dist")], cwd=ctx, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    with zipfile.ZipFile(tmp_path / "dist" / out.stdout.strip().splitlines()[-1]) as wheel:
        names = wheel.namelist()
        metadata = wheel.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert {n.split("/")[0] for n in names} >= {"ocean", "data_prep", "pipelines", "jobs"}
    assert "jobs/cli.py" in names and "ocean/__init__.py" in names
    required = {canonicalize_name(Requirement(ln.split(":", 1)[1]).name): Requirement(ln.split(":", 1)[1])
                for ln in metadata.splitlines() if ln.startswith("Requires-Dist:")}
    for name, version in pins(("gpu",)).items():
        assert str(required[name].specifier) == f"=={version}", name


# ------------------------------------------------------------------ KubeRay manifests against the CRDs

def strict_schema(node):
    """A CRD's OpenAPI v3 schema as JSON Schema the way the API server applies it to `kubectl apply`: an object
    that lists its properties refuses others (strict field validation) unless it preserves unknown fields."""
    if isinstance(node, list):
        return [strict_schema(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: strict_schema(v) for k, v in node.items()}
    if (out.get("type") == "object" and isinstance(out.get("properties"), dict)
            and "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    if out.get("nullable") is True and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


@cache
def crd(kind: str) -> tuple[dict, dict]:
    """``(CRD document, strict v1 schema)`` of RayCluster or RayJob; skips when ../shared is absent."""
    path = CRD_DIR / f"ray.io_{kind.lower()}s.yaml"
    if not path.is_file():
        pytest.skip(f"KubeRay CRDs not found at {CRD_DIR}")
    doc = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # 2 MB
    version = next(v for v in doc["spec"]["versions"] if v["name"] == "v1")
    return doc, strict_schema(version["schema"]["openAPIV3Schema"])


CEL_FIELDS = ("managedBy", "deletionStrategy", "gcsFaultToleranceOptions")  # rules jsonschema cannot run


def manifest_errors(doc: dict) -> list[str]:
    """Schema errors of one RayCluster / RayJob manifest (empty: valid), plus the checks the API server makes
    outside the schema that matter here."""
    from jsonschema import Draft4Validator  # OpenAPI 3.0 schemas follow draft 4 (boolean exclusiveMinimum)

    if doc.get("apiVersion") != "ray.io/v1" or doc.get("kind") not in ("RayCluster", "RayJob"):
        return [f"not a ray.io/v1 RayCluster or RayJob: {doc.get('apiVersion')} {doc.get('kind')}"]
    crd_doc, schema = crd(doc["kind"])
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in Draft4Validator(schema).iter_errors(doc)]
    name = doc.get("metadata", {}).get("name", "")
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) or len(name) > 63:
        errors.append(f"metadata.name {name!r} is not a DNS-1123 label")
    spec = doc.get("spec", {})
    for field in CEL_FIELDS:
        if field in spec or field in spec.get("rayClusterSpec", {}):
            errors.append(f"spec.{field} carries CEL rules this offline check cannot run")
    return errors


def containers(cluster: dict) -> list[dict]:
    spec = cluster["spec"]
    groups = [spec["headGroupSpec"]] + spec.get("workerGroupSpecs", [])
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def test_kuberay_manifests_validate_against_the_crds():
    docs = manifests()
    assert {d["kind"] for d in docs.values()} == {"RayCluster", "RayJob"}
    for name, doc in docs.items():
        assert manifest_errors(doc) == [], name


@pytest.mark.parametrize("file,breakage", [
    ("raycluster.yaml", "unknown spec field"),
    ("raycluster.yaml", "auth mode"),
    ("raycluster.yaml", "replicas as text"),
    ("raycluster.yaml", "no group name"),
    ("raycluster.yaml", "container field typo"),
    ("raycluster.yaml", "bad quantity"),
    ("rayjob-train.yaml", "entrypoint typo"),
    ("rayjob-train.yaml", "selector value"),
])
def test_crd_check_refuses_a_broken_manifest(file, breakage):
    doc = copy.deepcopy(manifests()[file])
    spec = doc["spec"]
    if breakage == "unknown spec field":
        spec["workerGroupSpec"] = spec.pop("workerGroupSpecs")
    elif breakage == "auth mode":
        spec["authOptions"]["mode"] = "tokens"
    elif breakage == "replicas as text":
        spec["workerGroupSpecs"][1]["maxReplicas"] = "4"
    elif breakage == "no group name":
        del spec["workerGroupSpecs"][0]["groupName"]
    elif breakage == "container field typo":
        spec["headGroupSpec"]["template"]["spec"]["containers"][0]["envForm"] = [{"secretRef": {"name": "x"}}]
    elif breakage == "bad quantity":
        spec["workerGroupSpecs"][1]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] = "lots"
    elif breakage == "entrypoint typo":
        spec["entrypont"] = spec.pop("entrypoint")
    else:
        spec["clusterSelector"]["ray.io/cluster"] = 7
    assert manifest_errors(doc)


def test_kuberay_cluster_token_secrets_gpus_and_image():
    docs = manifests()
    cluster = docs["raycluster.yaml"]
    spec = cluster["spec"]
    block = README.read_text().replace("\\\n", " ")  # continuation lines joined
    secret = spec["authOptions"]["secretName"]
    assert spec["authOptions"]["mode"] == "token"
    assert spec["rayVersion"] == pins()["ray"]
    # the README creates that Secret with the key KubeRay reads, and shows how a client gets the token back
    assert re.search(rf"kubectl create secret generic {secret} --from-literal=auth_token=", block)
    assert f"kubectl get secret {secret} -o jsonpath='{{.data.auth_token}}'" in block
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert {e["name"] for e in head.get("env", [])} >= {"MLFLOW_TRACKING_URI"}
    (s3_secret,) = [s["secretRef"]["name"] for s in head["envFrom"]]
    m = re.search(rf"kubectl create secret generic {s3_secret} ((?:--from-literal=\S+\s*)+)", block)
    assert m, f"README does not create the Secret {s3_secret}"
    keys = set(re.findall(r"--from-literal=(\w+)=", m.group(1)))
    # the same variables the cluster block sends with `ray job submit` (and ocean/storage.py reads)
    sent = set(re.findall(r"\"(AWS_[A-Z_]+)\"", cluster_block())) - {"AWS_SESSION_TOKEN"}
    assert keys == sent == {"AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    for c in containers(cluster):
        assert c["image"] == project_image()
        assert not any("RAY_AUTH" in e["name"] or e["name"].startswith("AWS_") for e in c.get("env", []))
    (gpu,) = [g for g in spec["workerGroupSpecs"] if "nvidia.com/gpu" in
              g["template"]["spec"]["containers"][0]["resources"].get("limits", {})]
    gpus_per_pod = int(gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"])
    train = readme_job_commands()["train"]
    workers = int(train[train.index("--workers") + 1])
    assert "--gpu" in train and workers <= gpu["maxReplicas"] * gpus_per_pod
    assert workers <= load_cluster_yaml()["available_node_types"]["gpu_worker"]["max_workers"]
    version = re.escape(pyproject()["project"]["version"])
    assert re.search(rf"docker build -t \S+/ocean-ray:{version} \.", block)


def job_argv_problem(argv: list[str]) -> str | None:
    """None when ``python -m jobs.<name> ARGS`` parses with that job's own parser, else argparse's message."""
    from jobs.common import add_logging_arguments

    if argv[:2] != ["python", "-m"] or not argv[2].startswith("jobs."):
        return f"not `python -m jobs.<name>`: {argv[:3]}"
    mod = importlib.import_module(argv[2])
    parser = argparse.ArgumentParser(prog=argv[2], exit_on_error=False)
    mod.add_arguments(parser)
    add_logging_arguments(parser)
    try:
        parser.parse_args(argv[3:])
    except (argparse.ArgumentError, SystemExit) as exc:
        return str(exc)
    return None


def test_rayjobs_run_the_readme_jobs_on_the_cluster(capsys):
    docs = manifests()
    cluster_name = docs["raycluster.yaml"]["metadata"]["name"]
    jobs = {d["spec"]["entrypoint"].split()[2].removeprefix("jobs."): d
            for d in docs.values() if d["kind"] == "RayJob"}
    assert set(jobs) == set(JOBS)
    readme = readme_job_commands()
    for name, doc in jobs.items():
        assert doc["spec"]["clusterSelector"] == {"ray.io/cluster": cluster_name}
        assert "runtimeEnvYAML" not in doc["spec"]  # no secrets in the job object: they live on the head pod
        argv = shlex.split(doc["spec"]["entrypoint"])
        assert job_argv_problem(argv) is None, (name, job_argv_problem(argv))
        assert argv == [a.replace("<MLFLOW_RUN_ID>", "TRAINING_RUN_ID") for a in readme[name]], name
    assert job_argv_problem(["python", "-m", "jobs.train", "--data", "x", "--out", "y", "--workers", "four"])
    assert job_argv_problem(["python", "-m", "jobs.prepare", "--out", "y"])  # --dataset is required
    capsys.readouterr()  # argparse's usage lines
