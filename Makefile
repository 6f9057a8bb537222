# The two commands a newcomer needs:  make run  and  make test.
# Both install what they need first (a virtualenv in .venv, buf from npm)
# and regenerate code from proto/ when a contract changed.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROTOS := $(shell find proto -name '*.proto')

.PHONY: run test test-local-llm gen lint lint-proto bench-gateway bench-scifact bench-retrieval bench-ingestion bench-load bench-sdk-codec bench-faults install models clean

run: install
	$(PY) scripts/run_mesh.py

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

# The local model's generator and its tests: builds llama-cpp-python (about
# five minutes), which `make test` does without.
test-local-llm: install
	$(PY) -m pip install --quiet -e '.[local-llm]'
	SAGEMESH_TEST_LOCAL_LLM=1 $(PY) -m pytest tests/local_llm $(PYTEST_ARGS)

# Regenerates gen/python (messages, .pyi stubs, gRPC stubs) from proto/.
gen: $(VENV)/.installed
	$(PY) scripts/generate_protos.py

lint-proto: install
	node_modules/.bin/buf lint

lint: lint-proto
	$(VENV)/bin/ruff check meshkit gateway services scripts tests bench sagemesh_sdk sagemesh_cli

# Benchmarks print their figures; they are not part of `make test`.
bench-gateway: install
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(PY) -m bench.gateway_overhead --seconds 10 --out bench/results/gateway.md

# Retrieval quality on BEIR SciFact (read from ../shared/data/beir-scifact or
# SAGEMESH_SCIFACT_DIR), through IndexChunks + Retrieve: about 10 minutes.
bench-scifact: install
	$(PY) -m bench.scifact_eval --out bench/results/scifact.md

# Retrieve latency at 10k and 100k chunks, the vector search's recall against exact search, and
# indexing throughput, on the local vector index: about 15 minutes (`--vectors milvus-lite` or
# `--vectors milvus-server` for the others).
bench-retrieval: install
	$(PY) -m bench.retrieval_speed --out bench/results/retrieval_speed.md

# First 2,000 SciFact abstracts uploaded through the gateway until indexed, against the
# embedding model's own speed on the same chunks (about 5 minutes); then 1,000 documents of 13
# formats (Office, e-mail, EPUB, images and scans by OCR among them) through upload, parse,
# chunk and index, and a 200-page scan read alone (OCR pages/s, the knowledge service's peak
# memory): about 25 minutes, the scan some 11 to 14 of them (OCR reads 0.25 to 0.3 pages/s on
# 2 cores). `python -m bench.ingestion --scan-pages 0` leaves the scan out.
bench-ingestion: install
	$(PY) -m bench.text_ingestion --out bench/results/text_ingestion.md
	$(PY) -m bench.ingestion --out bench/results/ingestion.md

# Typed messages: protobuf's against betterproto2's (why the SDK uses grpcio's stubs); seconds.
bench-sdk-codec: install
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) -m bench.sdk_codec --out bench/results/sdk_codec.md

# Mixed REST traffic from 32 users for 60 s through the whole mesh, once without
# pause (what it can take) and once pausing 1-3 s as people do (what they wait):
# about 4 minutes.
bench-load: install
	$(PY) -m bench.load --users 32 --seconds 60 --out bench/results/load.md
	$(PY) -m bench.load --users 32 --seconds 60 --pause 1 3 --out bench/results/load-pausing.md

# The rag_engine and knowledge killed -9 and PostgreSQL (a cluster of its own) stopped, each for 10 s, under 16 users' mixed traffic: about 2.5 minutes.
bench-faults: install
	$(PY) -m bench.faults --users 16 --out bench/results/faults.md

install: $(VENV)/.installed node_modules/.installed gen/.stamp models

# The embedding model, exported to ONNX from the weights a package ships
# (nothing is downloaded); skipped when already up to date.
models: $(VENV)/.installed
	$(PY) scripts/export_embedding_model.py --out models/all-minilm-l6-v2

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,models]'
	@# The editable install maps only the packages that exist when it runs:
	@# generate first (grpcio-tools is installed now), then map gen/python too.
	$(PY) scripts/generate_protos.py
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

node_modules/.installed: package.json package-lock.json
	npm install --no-audit --no-fund --loglevel=error
	touch $@

gen/.stamp: $(PROTOS) scripts/generate_protos.py $(VENV)/.installed
	$(PY) scripts/generate_protos.py
	touch $@

clean:
	rm -rf $(VENV) node_modules gen .build models
