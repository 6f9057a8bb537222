"""The container image (Dockerfile, .dockerignore), checked statically.

No Docker engine runs where this suite runs, so the image is never built here:
these tests read the Dockerfile (stages, instructions, line continuations) and
hold it to what the code and Kubernetes need. The runtime stage is slim, has no
compilers and runs as a numeric non-root user; its settings are real settings
and point at the model it copies; every module it runs exists; the packages the
services import are all copied into the build; the build context keeps out what
must not go in. What only a build proves (that the wheels resolve, the export
runs, the image starts) is not covered.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import json
import os
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path, PurePosixPath

import pytest
from pydantic import AliasChoices

from gateway.settings import GatewaySettings
from meshkit import probe
from meshkit.settings import ENV_PREFIX, MeshSettings
from meshkit.topology import GATEWAY_METRICS_PORT, SERVICES

ROOT = Path(__file__).resolve().parent.parent.parent
DOCKERFILE = ROOT / "Dockerfile"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

COMPILERS = {"gcc", "g++", "cc", "clang", "build-essential", "make", "cmake"}
BUILD_TOOLS = {"setuptools", "wheel", "build", "cython", "grpcio-tools", "maturin", "torch"}
PYTHON_MODULE = re.compile(r"(?:^|[\s/\"'])python3?(?:\.\d+)?\s+-m\s+([\w.]+)")
PYTHON_SCRIPT = re.compile(r"(?:^|[\s/\"'])python3?(?:\.\d+)?\s+((?:[\w.-]+/)*[\w.-]+\.py)\b")


# The Dockerfile, parsed -------------------------------------------------------

@dataclass
class Instruction:
    keyword: str
    # Leading --name=value options: COPY --from, RUN --mount, HEALTHCHECK --interval.
    flags: dict[str, str]
    body: str

    def words(self) -> list[str]:
        """The arguments: a JSON array (exec form) or shell words."""
        if self.body.startswith("["):
            return json.loads(self.body)
        return shlex.split(self.body)


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for instruction in self.all("ENV"):
            words = instruction.words()
            if "=" not in words[0]:  # the legacy form: ENV NAME value
                values[words[0]] = " ".join(words[1:])
                continue
            for word in words:
                name, _, value = word.partition("=")
                values[name] = value
        return values


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def lineage(self, stage: Stage) -> list[Stage]:
        """The stage and those it is built FROM, nearest first."""
        chain = [stage]
        while chain[-1].base in {s.name for s in self.stages}:
            chain.append(self.stage(chain[-1].base))
        return chain


def logical_lines(text: str) -> list[str]:
    """Instructions one a line: continuations joined, comments and blank lines dropped
    (inside a continued instruction too, as Docker does)."""
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += raw.rstrip()[:-1]
            continue
        lines.append((current + raw).strip())
        current = ""
    if current.strip():
        lines.append(current.strip())
    return lines


def parse_instruction(line: str) -> Instruction:
    keyword, _, rest = line.partition(" ")
    flags: dict[str, str] = {}
    rest = rest.strip()
    while rest.startswith("--"):
        flag, _, rest = rest.partition(" ")
        name, _, value = flag[2:].partition("=")
        flags[name] = value
        rest = rest.strip()
    return Instruction(keyword.upper(), flags, rest)


@cache
def dockerfile() -> Dockerfile:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical_lines(DOCKERFILE.read_text()):
        instruction = parse_instruction(line)
        if instruction.keyword == "FROM":
            words = instruction.words()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif not stages:
            assert instruction.keyword == "ARG", f"only ARG may come before the first FROM: {line}"
            name, _, value = instruction.body.partition("=")
            global_args[name] = value
        else:
            stages[-1].instructions.append(instruction)
    return Dockerfile(global_args, stages)


def run_commands(stage: Stage) -> list[list[str]]:
    """Each simple command of the stage's RUN instructions, as words."""
    commands = []
    for instruction in stage.all("RUN"):
        # The inline Python of some RUNs holds ';' of its own: only the shell's separators split here.
        for command in re.split(r"\s(?:&&|\|\||;|\|)\s", instruction.body):
            try:
                commands.append(shlex.split(command))
            except ValueError:  # a quote spanning a separator: keep the raw text
                commands.append(command.split())
    return commands


def installs(command: list[str]) -> tuple[str, list[str]] | None:
    """(installer, packages) when the command installs packages."""
    words = [w for w in command if not w.startswith("-")]
    if len(words) >= 2 and Path(words[0]).name in {"apt-get", "apt", "apk", "dnf", "yum"} and "install" in words:
        return "system", words[words.index("install") + 1:]
    joined = " ".join(command)
    if re.search(r"(?:^|/)pip3?\s|-m\s+pip\s", joined) and "install" in words:
        return "pip", words[words.index("install") + 1:]
    return None


def resolve(stage: Stage, path: str) -> PurePosixPath:
    """An image path as the stage's WORKDIR makes it absolute."""
    workdir = PurePosixPath("/")
    for instruction in stage.instructions:
        if instruction.keyword == "WORKDIR":
            workdir = workdir / instruction.body
    return workdir / path


def copies_from_context(stage: Stage) -> list[tuple[list[str], str]]:
    return [(i.words()[:-1], i.words()[-1]) for i in stage.all("COPY") if "from" not in i.flags]


def arg_default(name: str) -> str:
    for stage in dockerfile().stages:
        for instruction in stage.all("ARG"):
            key, _, value = instruction.words()[0].partition("=")
            if key == name:
                return value
    return dockerfile().global_args[name]


def expand(value: str) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: arg_default(m.group(1)), value)


# .dockerignore, read as Docker reads it --------------------------------------

def glob_regex(pattern: str) -> re.Pattern[str]:
    """Go's filepath.Match syntax, plus ** for any number of directories."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + "[" + pattern[i + 1:end].replace("!", "^", 1) + "]", end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


@cache
def ignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    patterns = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negated = line.startswith("!")
            patterns.append((negated, glob_regex(line.lstrip("!").strip("/"))))
    return patterns


def excluded_from_context(path: str) -> bool:
    """Whether the build context leaves `path` out: the last pattern matching it or
    one of its parent directories decides."""
    parts = PurePosixPath(path).parts
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    excluded = False
    for negated, pattern in ignore_patterns():
        if any(pattern.fullmatch(prefix) for prefix in prefixes):
            excluded = not negated
    return excluded


# Settings -----------------------------------------------------------------

def settings_classes() -> list[type[MeshSettings]]:
    classes: list[type[MeshSettings]] = [MeshSettings, GatewaySettings]
    for name in SERVICES:
        module = importlib.import_module(f"services.{name}.settings")
        classes += [c for _, c in inspect.getmembers(module, inspect.isclass)
                    if issubclass(c, MeshSettings) and c.__module__ == module.__name__]
    return classes


def environment_names(settings_class: type[MeshSettings]) -> set[str]:
    names = set()
    for name, info in settings_class.model_fields.items():
        if isinstance(info.validation_alias, AliasChoices):
            names |= {c.upper() for c in info.validation_alias.choices if isinstance(c, str)}
        else:
            names.add(f"{ENV_PREFIX}{name}".upper())
    return names


def image_settings(monkeypatch, settings_class: type[MeshSettings]) -> MeshSettings:
    """The settings a process in the image reads: the image's environment and nothing else."""
    env = dockerfile().final.env()
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX) or name in {"DATABASE_URL", "REDIS_URL"}:
            monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith(ENV_PREFIX):
            monkeypatch.setenv(name, value)
    return settings_class(_env_file=None)


# The tests --------------------------------------------------------------------

def test_the_dockerfile_parses_into_named_stages():
    names = [s.name for s in dockerfile().stages]
    assert len(names) >= 2 and all(names), names
    assert len(set(names)) == len(names), names


def test_the_runtime_is_a_slim_python_image_like_the_one_that_built_the_venv():
    final = dockerfile().final
    assert re.fullmatch(r"python:3\.\d+(\.\d+)?-slim(-\w+)?(@sha256:[0-9a-f]{64})?", final.base), final.base
    minimum = re.search(r"(\d+\.\d+)", PYPROJECT["project"]["requires-python"]).group(1)
    version = re.match(r"python:(\d+\.\d+)", final.base).group(1)
    assert tuple(map(int, version.split("."))) >= tuple(map(int, minimum.split("."))), final.base
    # /opt/venv's interpreter links to the base image's python: the two must be the same image.
    (venv_copy,) = [c for c in final.all("COPY") if c.words()[-1].rstrip("/") == "/opt/venv"]
    builder = dockerfile().lineage(dockerfile().stage(venv_copy.flags["from"]))[-1]
    assert builder.base == final.base


def test_the_runtime_installs_no_compilers_or_build_tools():
    for command in run_commands(dockerfile().final):
        installed = installs(command)
        if installed is None:
            continue
        kind, packages = installed
        names = {re.split(r"[=<>\[;]", p)[0].lower() for p in packages}
        forbidden = COMPILERS if kind == "system" else BUILD_TOOLS
        assert not names & forbidden, f"the runtime stage installs {sorted(names & forbidden)}: {command}"


def test_the_build_installs_the_project_non_editable_without_dev_extras():
    build_runs = " ".join(i.body for s in dockerfile().stages if s is not dockerfile().final for i in s.all("RUN"))
    project_installs = [c for s in dockerfile().stages for c in run_commands(s)
                        if (found := installs(c)) and found[0] == "pip" and "." in found[1]]
    assert project_installs, "no stage runs `pip install .`"
    for command in project_installs:
        assert not {"-e", "--editable"} & set(command), command
    assert not re.search(r"\.\[[^\]]*(dev|local-llm)", build_runs), "an image stage installs the dev or local-llm extra"


def test_the_runtime_user_is_numeric_and_not_root():
    users = dockerfile().final.all("USER")
    assert users, "the runtime stage sets no USER"
    user, _, group = users[-1].body.partition(":")
    assert user.isdigit() and int(user) != 0, users[-1].body
    assert not group or (group.isdigit() and int(group) != 0), users[-1].body


def test_the_data_dir_is_outside_the_image_and_owned_by_the_runtime_user():
    final = dockerfile().final
    data_dir = final.env()[f"{ENV_PREFIX}DATA_DIR"]
    uid = final.all("USER")[-1].body.partition(":")[0]
    assert data_dir.startswith("/") and not data_dir.startswith(("/app", "/opt")), data_dir
    assert any(data_dir in run.body and re.search(rf"(-o\s+{uid}\b|chown\s+(-\S+\s+)*{uid}\b)", run.body)
               for run in final.all("RUN")), f"no RUN creates {data_dir} owned by {uid}"


def test_python_writes_nothing_at_run_time():
    env = dockerfile().final.env()
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"
    assert env.get("PYTHONUNBUFFERED") == "1"


def test_the_healthcheck_runs_the_probe_within_its_timeout():
    (healthcheck,) = dockerfile().final.all("HEALTHCHECK")
    command = parse_instruction(healthcheck.body)
    assert command.keyword == "CMD"
    assert PYTHON_MODULE.search(" ".join(command.words())).group(1) == "meshkit.probe"
    timeout = healthcheck.flags.get("timeout", "30s")
    assert timeout.endswith("s") and float(timeout[:-1]) > probe.DEFAULT_TIMEOUT_SECONDS, timeout


def test_the_default_command_runs_a_process_of_the_mesh():
    (cmd,) = dockerfile().final.all("CMD")
    module = PYTHON_MODULE.search(" ".join(cmd.words())).group(1)
    assert module in {"gateway.server", *(f"services.{name}.server" for name in SERVICES)}, module
    assert not dockerfile().final.all("ENTRYPOINT"), "an ENTRYPOINT would stop `docker run IMAGE python -m ...`"


def test_every_module_and_script_the_dockerfile_runs_exists():
    for stage in dockerfile().stages:
        for instruction in stage.instructions:
            text = instruction.body if instruction.keyword != "CMD" else " ".join(instruction.words())
            for module in PYTHON_MODULE.findall(text):
                assert importlib.util.find_spec(module) is not None, f"{instruction.keyword}: no module {module}"
            for script in PYTHON_SCRIPT.findall(text):
                assert (ROOT / script).is_file(), f"{instruction.keyword}: no script {script}"
                assert not excluded_from_context(script), f".dockerignore leaves out {script}"


def test_every_stage_copied_from_is_defined_earlier():
    seen: set[str] = set()
    for stage in dockerfile().stages:
        for copy in stage.all("COPY"):
            if "from" in copy.flags:
                assert copy.flags["from"] in seen, f"COPY --from={copy.flags['from']} names no earlier stage"
        seen.add(stage.name)


def test_the_runtime_takes_the_model_from_the_models_stage_and_finds_it(monkeypatch):
    """The export's output is what the runtime copies, and the settings the image sets
    resolve to it: a pod never downloads or builds a model."""
    image = dockerfile()
    models = image.stage("models")
    exports = [c for c in run_commands(models) if any(w.endswith("export_embedding_model.py") for w in c)]
    assert exports, "the models stage runs no export_embedding_model.py"
    out = PurePosixPath(exports[-1][exports[-1].index("--out") + 1])
    out = out if out.is_absolute() else resolve(models, str(out))
    copies = [c for c in image.final.all("COPY") if c.flags.get("from") == "models"]
    assert copies, "the runtime copies nothing from the models stage"
    for copy in copies:
        # Only the model: the models stage's venv holds PyTorch.
        assert all(out.is_relative_to(PurePosixPath(source)) for source in copy.words()[:-1]), copy.body
    (copy,) = copies
    source, destination = PurePosixPath(copy.words()[0]), resolve(image.final, copy.words()[-1])
    model_in_image = destination / out.relative_to(source)

    from services.knowledge.settings import KnowledgeSettings
    from services.rag_engine.settings import RagEngineSettings

    rag = image_settings(monkeypatch, RagEngineSettings)
    assert resolve(image.final, str(rag.embedding_model_path)) == model_in_image
    knowledge = image_settings(monkeypatch, KnowledgeSettings)
    assert resolve(image.final, str(knowledge.chunk_tokenizer)) == model_in_image / "tokenizer.json"


def test_every_sagemesh_variable_the_image_sets_is_a_setting():
    known = set().union(*(environment_names(c) for c in settings_classes()))
    for stage in dockerfile().stages:
        for name in stage.env():
            if name.upper().startswith(ENV_PREFIX):
                assert name.upper() in known, f"{name} is no setting of any process"


def test_the_image_listens_beyond_loopback():
    env = dockerfile().final.env()
    for setting in ("LISTEN_HOST", "HTTP_HOST", "METRICS_HOST"):
        assert env.get(f"{ENV_PREFIX}{setting}") == "0.0.0.0", setting


def test_every_port_of_the_mesh_is_exposed():
    exposed = set()
    for expose in dockerfile().final.all("EXPOSE"):
        for word in expose.words():
            first, _, last = word.split("/")[0].partition("-")
            exposed |= set(range(int(first), int(last or first) + 1))
    wanted = {GATEWAY_METRICS_PORT, GatewaySettings.model_fields["http_port"].default}
    wanted |= {p for info in SERVICES.values() for p in (info.default_port, info.default_metrics_port)}
    assert wanted <= exposed, sorted(wanted - exposed)


def test_the_labels_say_what_the_image_is():
    labels = {}
    for label in dockerfile().final.all("LABEL"):
        labels.update(word.partition("=")[::2] for word in label.words())
    for key in ("source", "title", "version", "licenses"):
        assert f"org.opencontainers.image.{key}" in labels, key
    assert expand(labels["org.opencontainers.image.version"]) == PYPROJECT["project"]["version"]
    assert labels["org.opencontainers.image.licenses"] == PYPROJECT["project"]["license"]["text"]


def packaged_top_level() -> set[str]:
    """The top-level packages pyproject installs (meshkit, services, ...)."""
    return {p.rstrip("*").rstrip(".") for p in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]}


def test_every_installed_package_reaches_the_build():
    build = dockerfile().stage("build")
    copied = {PurePosixPath(s).parts[0] for sources, _ in copies_from_context(build) for s in sources}
    generated = [p for p in packaged_top_level() if not (ROOT / p).is_dir()]
    for package in packaged_top_level() - set(generated):
        assert package in copied, f"the build stage does not copy {package}/"
    # The rest is generated from proto/ in the build, before the project is installed.
    runs = [i.body for i in build.all("RUN")]
    generate = next(n for n, body in enumerate(runs) if "generate_protos.py" in body)
    install = next(n for n, body in enumerate(runs) if re.search(r"pip3?\s+install\s+(--?\S+\s+)*\.(\s|$)", body))
    assert generated and "proto" in copied and generate < install


def test_the_code_imports_no_first_party_package_left_out_of_the_image():
    first_party = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()} | packaged_top_level()
    packaged = packaged_top_level()
    for package in packaged & {p.name for p in ROOT.iterdir() if p.is_dir()}:
        for source in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(source.read_text(), str(source))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    assert top not in first_party or top in packaged, f"{source.relative_to(ROOT)} imports {name}"


@pytest.mark.parametrize("path", [".git", ".venv", "node_modules", "var", "gen", "models", "tests",
                                  "gen/python/sagemesh/__init__.py", "meshkit/__pycache__/probe.cpython-311.pyc"])
def test_the_build_context_leaves_out(path):
    assert excluded_from_context(path), path


def test_the_build_context_holds_everything_the_dockerfile_copies():
    for stage in dockerfile().stages:
        for sources, _ in copies_from_context(stage):
            for source in sources:
                assert (ROOT / source).exists(), source
                assert not excluded_from_context(source), source
                files = (ROOT / source).rglob("*") if (ROOT / source).is_dir() else []
                for path in files:
                    relative = path.relative_to(ROOT).as_posix()
                    if path.is_file() and "__pycache__" not in path.parts:
                        assert not excluded_from_context(relative), f".dockerignore leaves out {relative}"
