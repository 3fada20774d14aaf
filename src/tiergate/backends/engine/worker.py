"""The embedded engine's worker process: ``python -m tiergate.backends.engine.worker '<json settings>'``.

One llama.cpp model, one generation at a time. It speaks JSON lines: requests on stdin, events on stdout (the
real stdout is kept for the protocol; anything native code prints goes to stderr). A crash here (SIGSEGV in a
kernel, the OOM killer) ends this process only; the gateway's supervisor sees the exit and restarts it.

Requests (``id`` chosen by the gateway)::

    {"op": "generate", "id": 1, "messages": [...], "max_tokens": 256 | null, "stop": [...], "temperature": ...,
     "top_p": ..., "top_k": ..., "seed": ..., "json_schema": {...} | null, "grammar_schema": {...} | null}
    {"op": "count", "id": 2, "messages": [...]}        prompt tokens, chat template included
    {"op": "cancel", "id": 1}                          stop that generation at its next token

Events::

    {"event": "ready", "info": {...}}                  once, after the model loaded and the self-test passed
    {"id": 1, "event": "start", "prompt_tokens": 31, "max_tokens": 256}
    {"id": 1, "event": "delta", "text": "..."}
    {"id": 1, "event": "end", "finish": "stop" | "length" | "stop_sequence", "stop_sequence": "..." | null,
     "prompt_tokens": 31, "completion_tokens": 12}
    {"id": 2, "event": "count", "tokens": 31}
    {"id": 1, "event": "error", "kind": "context" | "invalid" | "engine", "message": "..."}
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any, cast

from tiergate.backends.engine import build

if TYPE_CHECKING:
    from llama_cpp import Llama

JSON = dict[str, Any]
#: The self-test: one short generation, so that a build that crashes does so at start, not at the first request.
SELF_TEST: JSON = {"messages": [{"role": "user", "content": "Say OK."}], "max_tokens": 2, "temperature": 0.0}


class Engine:
    """The model and how prompts are counted and generated, as the worker runs them."""

    def __init__(self, settings: JSON) -> None:
        import llama_cpp.llama_cpp as raw
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.build = build_info()
        self.plan = build.plan(build.parse_system_info(self.build["system_info"]))
        if not self.plan.use_extra_buffers:  # Llama() takes no such argument; its model params come from here
            defaults = raw.llama_model_default_params

            def without_extra_buffers() -> Any:
                params = defaults()
                params.use_extra_bufts = False
                return params

            raw.llama_model_default_params = without_extra_buffers
        path = settings["model_path"]
        n_ctx = settings.get("n_ctx") or 0
        cap = int(settings.get("n_ctx_cap") or 0)
        if not n_ctx:  # the model's trained context, capped to bound the KV cache's memory: read it first
            meta = Llama(model_path=path, vocab_only=True, verbose=False).metadata
            trained = int(meta.get(f"{meta.get('general.architecture', 'llama')}.context_length", 0))
            n_ctx = min(trained, cap) if trained and cap else (trained or cap or 4096)
        self.llm: Llama = Llama(model_path=path, n_ctx=n_ctx, n_threads=settings.get("n_threads"), verbose=False)
        self.n_ctx_train = self.llm._model.n_ctx_train()
        self.n_ctx = self.llm.n_ctx()
        eos, bos = self.llm.token_eos(), self.llm.token_bos()
        template = self.llm.metadata.get("tokenizer.chat_template")
        self.formatter = Jinja2ChatFormatter(  # the template create_chat_completion applies, to count with
            template=template or "{% for m in messages %}{{ m['content'] }}\n{% endfor %}",
            eos_token=self.llm._model.token_get_text(eos) if eos != -1 else "",
            bos_token=self.llm._model.token_get_text(bos) if bos != -1 else "",
        )

    def info(self) -> JSON:
        return self.build | {
            "extra_buffers": self.plan.use_extra_buffers,
            "extra_buffers_reason": self.plan.reason,
            "n_ctx": self.n_ctx,
            "n_ctx_train": self.n_ctx_train,
            "n_threads": self.llm.n_threads,
            "pid": os.getpid(),
        }

    def prompt(self, messages: list[JSON]) -> tuple[list[int], Any]:
        """The chat template applied (as ``create_chat_completion`` would) and tokenized: the tokens the model
        reads, and the template's stop rules."""
        result = self.formatter(messages=cast(Any, messages))
        tokens = self.llm.tokenize(result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True)
        return tokens, result

    def count(self, messages: list[JSON]) -> int:
        """Prompt tokens as the engine sees them: the chat template applied, special tokens included."""
        return len(self.prompt(messages)[0])

    def generate(self, job: JSON, cancelled: threading.Event) -> Iterator[JSON]:
        """Events for one generation: start, deltas, end. ``max_tokens`` is clamped to what the context holds."""
        from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

        tokens, template = self.prompt(job["messages"])
        room = self.n_ctx - len(tokens)
        if room <= 0:
            raise PromptTooLong(
                f"the prompt is {len(tokens)} tokens and the context window holds {self.n_ctx}; "
                "shorten the conversation"
            )
        max_tokens = min(job.get("max_tokens") or room, room)
        yield {"event": "start", "prompt_tokens": len(tokens), "max_tokens": max_tokens}
        kwargs: JSON = {
            "prompt": tokens,
            "max_tokens": max_tokens,
            "stream": True,
            "stop": list(template.stop),  # the caller's own are matched here, to say which one ended the answer
            "stopping_criteria": template.stopping_criteria,
        }
        for key in ("temperature", "top_p", "top_k", "seed"):
            if job.get(key) is not None:
                kwargs[key] = job[key]
        if job.get("grammar_schema") is not None:  # a forced tool call: its arguments, or nothing
            try:
                kwargs["grammar"] = LlamaGrammar.from_json_schema(json.dumps(job["grammar_schema"]), verbose=False)
            except Exception as exc:
                raise UnsupportedSchema(
                    f"the tool's input_schema cannot be turned into a grammar for this model ({exc}); "
                    "simplify the schema or send the request to another backend"
                ) from exc
        elif job.get("json_schema") is not None:  # JSON mode, as create_chat_completion does it
            try:
                kwargs["grammar"] = LlamaGrammar.from_json_schema(json.dumps(job["json_schema"]), verbose=False)
            except Exception:
                kwargs["grammar"] = LlamaGrammar.from_string(JSON_GBNF, verbose=False)
        text: list[str] = []
        finish = "stop"
        stops = StopMatcher(job.get("stop") or [])
        chunks: Any = self.llm.create_completion(**kwargs)
        try:
            for chunk in chunks:
                choice = chunk["choices"][0]
                if out := stops.feed(choice["text"]):
                    text.append(out)
                    yield {"event": "delta", "text": out}
                if choice.get("finish_reason") == "length":
                    finish = "length"
                if cancelled.is_set() or stops.matched is not None:
                    break
        finally:
            chunks.close()  # a generator: stops llama.cpp where it is
        if rest := stops.flush():
            text.append(rest)
            yield {"event": "delta", "text": rest}
        produced = "".join(text)
        completion = len(self.llm.tokenize(produced.encode("utf-8"), add_bos=False, special=False)) if produced else 0
        if stops.matched is not None:
            finish = "stop_sequence"
        elif completion >= max_tokens:
            finish = "length"
        end = {"event": "end", "finish": finish, "prompt_tokens": len(tokens), "completion_tokens": completion}
        yield end | {"stop_sequence": stops.matched}


class StopMatcher:
    """The caller's stop sequences over a text that arrives in pieces: the text before the first one, holding back
    only what may be a stop sequence's beginning, and which one matched.

    >>> m = StopMatcher(["END", "\\n\\n"])
    >>> m.feed("one E"), m.feed("N"), m.feed("D two"), m.matched
    ('one ', '', '', 'END')
    >>> m = StopMatcher(["END"])
    >>> m.feed("A BE"), m.flush(), m.matched
    ('A B', 'E', None)
    """

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.matched: str | None = None
        self._held = ""

    def feed(self, text: str) -> str:
        if self.matched is not None:
            return ""
        buffer = self._held + text
        found = [(buffer.find(s), s) for s in self.stops if s in buffer]
        if found:
            at, self.matched = min(found)
            self._held = ""
            return buffer[:at]
        keep = max((n for s in self.stops for n in range(1, len(s)) if buffer.endswith(s[:n])), default=0)
        self._held = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep]

    def flush(self) -> str:
        rest, self._held = self._held, ""
        return rest


class PromptTooLong(ValueError):
    pass


class UnsupportedSchema(ValueError):
    pass


class Worker:
    """The request loop: a reader thread takes requests (cancels at once), the main thread generates."""

    def __init__(self, engine: Engine, out: IO[str]) -> None:
        self.engine = engine
        self.out = out
        self.lock = threading.Lock()
        self.jobs: queue.Queue[JSON | None] = queue.Queue()
        self.cancelled: dict[int, threading.Event] = {}

    def send(self, message: JSON) -> None:
        line = json.dumps(message, separators=(",", ":"))
        with self.lock:
            self.out.write(line + "\n")
            self.out.flush()

    def read(self, stream: IO[str]) -> None:
        for line in stream:
            try:
                msg = json.loads(line)
            except json.JSONDecodeError:
                continue
            if msg.get("op") == "cancel":
                self.cancelled.setdefault(msg["id"], threading.Event()).set()
            else:
                self.cancelled.setdefault(msg["id"], threading.Event())
                self.jobs.put(msg)
        for event in list(self.cancelled.values()):  # stdin closed: the gateway is gone or closing
            event.set()
        self.jobs.put(None)

    def run(self) -> None:
        while (job := self.jobs.get()) is not None:
            rid = job["id"]
            cancelled = self.cancelled.setdefault(rid, threading.Event())
            try:
                if cancelled.is_set():
                    continue
                if job["op"] == "count":
                    self.send({"id": rid, "event": "count", "tokens": self.engine.count(job["messages"])})
                    continue
                for event in self.engine.generate(job, cancelled):
                    self.send({"id": rid, **event})
            except PromptTooLong as exc:
                self.send({"id": rid, "event": "error", "kind": "context", "message": str(exc)})
            except UnsupportedSchema as exc:
                self.send({"id": rid, "event": "error", "kind": "invalid", "message": str(exc)})
            except UnicodeEncodeError:
                message = "the request holds text that is not valid Unicode (a lone surrogate); send UTF-8 text"
                self.send({"id": rid, "event": "error", "kind": "invalid", "message": message})
            except Exception as exc:
                self.send({"id": rid, "event": "error", "kind": "engine", "message": f"{type(exc).__name__}: {exc}"})
            finally:
                self.cancelled.pop(rid, None)


def build_info() -> JSON:
    """What the installed engine was compiled with (no model loaded, no kernel run)."""
    import llama_cpp
    import llama_cpp.llama_cpp as raw

    return {
        "engine": f"llama-cpp-python {llama_cpp.__version__}",
        "system_info": raw.llama_print_system_info().decode("utf-8", "replace").strip(),
    }


def main(argv: list[str]) -> int:
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # whatever native code prints cannot corrupt the protocol
    if argv[1:] == ["--info"]:
        protocol.write(json.dumps(build_info()) + "\n")
        protocol.flush()
        return 0
    settings: JSON = json.loads(argv[1]) if len(argv) > 1 else {}
    started = time.perf_counter()
    engine = Engine(settings)
    loaded = time.perf_counter()
    worker = Worker(engine, protocol)
    test = list(engine.generate({"id": 0, **SELF_TEST}, threading.Event()))
    info = engine.info() | {
        "load_s": round(loaded - started, 3),
        "self_test_s": round(time.perf_counter() - loaded, 3),
        "self_test_tokens": test[-1]["completion_tokens"],
    }
    worker.send({"event": "ready", "info": info})
    threading.Thread(target=worker.read, args=(sys.stdin,), daemon=True, name="requests").start()
    worker.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
