"""The local model's tests need the local-llm install extra (llama-cpp-python,
built from source in about five minutes), which `make test` does without:
`make test-local-llm` installs it and runs them."""

import os

collect_ignore_glob = [] if os.environ.get("SAGEMESH_TEST_LOCAL_LLM") == "1" else ["test_*.py"]
