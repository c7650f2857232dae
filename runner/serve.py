"""`python -m runner.serve`: compiled programs behind an HTTP API (FastAPI + uvicorn).

Configured with Hydra (conf/serve.yaml): which programs (MLflow model URIs such as
`models:/gsm8k@champion`, run dirs, program dirs), the model group (the same conf/model options
as the runner), host/port, a per-request timeout. Programs are loaded as state JSON + manifest
(runner.programs.loading), never unpickled unless `allow_pickle=true`.

Endpoints (the OpenAPI spec at /openapi.json; Swagger's /docs page is off: it loads from a CDN):
  GET  /health                  liveness + what is loaded
  GET  /programs                each program's inputs, outputs, source and recorded scores
  POST /programs/{name}         run it; the body is validated against the signature's input
                                fields (422 naming the missing/unknown fields)
  POST /programs/{name}/stream  Server-Sent Events: `token` events as the LM streams the last
                                output field (dspy.streamify + StreamListener), then `prediction`
  POST /ensemble                several programs on the same inputs: majority vote on the
                                answer field, or best_of = the answer of the program with the
                                highest recorded score among those that answered

Each program runs with the adapter it was compiled with (its manifest's). A body over
`max_body_bytes` is refused with 413, inputs too long for the model's context with 422. Each
request is logged as one JSON line (latency, LM token usage, status) on stderr.

  python -m runner.serve 'programs=[models:/gsm8k@champion]' model=llamacpp port=8000
"""

# No `from __future__ import annotations`: FastAPI must see the real classes of the per-program
# request models defined inside build_app.

import asyncio
import json
import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from runner.errors import RunnerError, exit_with, find_user_error
from runner.logs import quiet_libraries
from runner.settings import CONF_DIR

log = logging.getLogger("runner.serve")


# --------------------------------------------------------------------------- logging

class JsonFormatter(logging.Formatter):
    """One JSON object per line: what log shippers (and `jq`) read without parsing rules."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": round(record.created, 3), "level": record.levelname.lower(), "logger": record.name,
                 "msg": record.getMessage()}
        entry.update(getattr(record, "fields", {}) or {})
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info).splitlines()[-1]
        return json.dumps(entry, default=str)


def setup_logging(level: str = "INFO") -> None:
    quiet_libraries()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in ("runner", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False


def _event(msg: str, **fields) -> None:
    log.info(msg, extra={"fields": fields})


# --------------------------------------------------------------------------- programs

@dataclass
class Served:
    name: str
    program: Any
    manifest: dict
    inputs: dict[str, Any]          # field name -> annotation
    outputs: list[str]
    answer_field: str
    score: float | None
    call: Any = None                # dspy.asyncify(program)
    input_model: Any = None         # pydantic model of the request body
    adapter: Any = None             # the adapter it was compiled with (its manifest), else serve's
    extras: dict = field(default_factory=dict)


def _name_for(uri: str) -> str:
    """models:/gsm8k@champion -> gsm8k; a path -> its run dir's name."""
    if uri.startswith("models:/"):
        return uri[len("models:/"):].split("@")[0].split("/")[0]
    if uri.startswith("runs:/"):
        return uri[len("runs:/"):].strip("/").split("/")[0][:8]
    p = Path(uri)
    return (p.parent.name if p.name in ("program", "program.json") else p.name) or "program"


def _entries(programs) -> list[dict]:
    out = []
    for item in programs or []:
        item = OmegaConf.to_container(item, resolve=True) if isinstance(item, DictConfig) else item
        entry = {"uri": item} if isinstance(item, str) else dict(item)
        if not entry.get("uri"):
            raise RunnerError(f"serve program entry {item!r} has no uri", "use programs=[models:/NAME@ALIAS] or [{name: x, uri: ...}]")
        entry.setdefault("name", _name_for(str(entry["uri"])))
        out.append(entry)
    if not out:
        raise RunnerError("no programs to serve", "pass programs=[models:/gsm8k@champion] (or run dirs)")
    names = [e["name"] for e in out]
    dup = [n for n, c in Counter(names).items() if c > 1]
    if dup:
        raise RunnerError(f"two programs are named {dup[0]!r}", "give them names: programs=[{name: a, uri: ...}, ...]")
    return out


def _input_model(name: str, inputs: dict[str, Any]):
    """A pydantic model of the inputs: FastAPI validates (422 with field names) and documents it."""
    from pydantic import ConfigDict, create_model

    fields = {}
    for fname, ann in inputs.items():
        try:
            create_model("probe", x=(ann, ...))
            fields[fname] = (ann, ...)
        except Exception:  # a DSPy custom type pydantic cannot check: accept any JSON value
            fields[fname] = (Any, ...)
    safe = "".join(c if c.isalnum() else "_" for c in name)
    return create_model(f"{safe}_inputs", __config__=ConfigDict(extra="forbid"), **fields)


def manifest_adapter(man: dict, default):
    """The adapter recorded in a program's manifest (the one it was compiled and scored with), built
    only when its `_target_` is a dspy.Adapter; else `default`. A program compiled with
    adapter=plain sends plain prompts, and its demos are plain turns: another adapter would send
    it prompts it was never scored on."""
    import dspy
    from hydra.utils import get_object, instantiate

    node = ((man or {}).get("config") or {}).get("adapter")
    if not isinstance(node, dict) or "_target_" not in node:
        return default
    try:
        cls = get_object(node["_target_"])
    except Exception as exc:
        raise RunnerError(f"the program's adapter {node['_target_']!r} cannot be imported: {exc}",
                          "install what defines it, or re-save the program") from exc
    if not (isinstance(cls, type) and issubclass(cls, dspy.Adapter)):
        raise RunnerError(f"the program's manifest names {node['_target_']!r} as its adapter, which is not a dspy.Adapter",
                          "refusing to build it; re-save the program with dspy-runner")
    return instantiate(node)


def load_served(entries: list[dict], tracking_uri: str | None, allow_pickle: bool, default_adapter=None) -> dict[str, Served]:
    import dspy

    from runner.programs.loading import load_program, manifest_of

    served = {}
    for e in entries:
        program = load_program(str(e["uri"]), signature=e.get("signature"), tracking_uri=tracking_uri,
                               allow_pickle=allow_pickle)
        man = manifest_of(program)
        predictors = program.named_predictors()
        if not predictors:
            raise RunnerError(f"program {e['name']!r} has no predictors", "serve a DSPy program with at least one Predict")
        first_sig, last_sig = predictors[0][1].signature, predictors[-1][1].signature
        inputs = {k: f.annotation for k, f in first_sig.input_fields.items()}
        outputs = list(last_sig.output_fields)
        s = Served(name=e["name"], program=program, manifest=man, inputs=inputs, outputs=outputs,
                   answer_field=e.get("answer_field") or outputs[-1],
                   score=(man.get("scores") or {}).get("compiled_score"))
        s.call = dspy.asyncify(program)
        s.input_model = _input_model(s.name, inputs)
        s.adapter = manifest_adapter(man, default_adapter)
        served[s.name] = s
        _event("loaded program", program=s.name, source=man.get("source"), inputs=list(inputs), outputs=outputs,
               score=s.score, schema_version=man.get("schema_version"),
               adapter=type(s.adapter).__name__ if s.adapter is not None else None)
    return served


# --------------------------------------------------------------------------- calling

def _usage(pred) -> dict:
    """Token usage summed over LMs (dspy track_usage); {} when the provider reports none."""
    try:
        per_lm = pred.get_lm_usage() or {}
    except Exception:
        return {}
    total: dict[str, int] = {}
    for usage in per_lm.values():
        for k in ("prompt_tokens", "completion_tokens", "total_tokens"):
            if isinstance((usage or {}).get(k), int):
                total[k] = total.get(k, 0) + usage[k]
    return total


def _outputs(s: Served, pred) -> dict:
    from fastapi.encoders import jsonable_encoder

    return jsonable_encoder({k: pred.get(k) for k in s.outputs if k in pred.keys()} or pred.toDict())


def _sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data, default=str)}\n\n"


def _too_long(exc: BaseException) -> bool:
    """Whether `exc` (or what it wraps) says the prompt does not fit the model's context window."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if type(exc).__name__ in ("ContextLengthError", "ContextWindowExceededError"):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def build_app(served: dict[str, Served], model_name: str, timeout_s: float, max_body_bytes: int = 1_000_000):
    """The FastAPI app: one typed route pair per program, plus ensemble and health. Swagger's /docs
    page loads its scripts from a CDN, blank offline, so it is off; /openapi.json has the spec."""
    from typing import Literal

    import dspy
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from pydantic import BaseModel, ConfigDict, Field, ValidationError

    from runner.dspy_ext.streaming import LenientStreamListener

    app = FastAPI(title="dspy-runner serve", version="1", docs_url=None, redoc_url=None,
                  description="Compiled DSPy programs loaded from state JSON + manifest (no pickle).")

    @app.middleware("http")
    async def body_limit(request: Request, call_next):
        """413 for a body over max_body_bytes, before anything reads it into a model."""
        declared = request.headers.get("content-length")
        too_big = declared is not None and declared.isdigit() and int(declared) > max_body_bytes
        if not too_big and declared is None and request.method == "POST":
            too_big = len(await request.body()) > max_body_bytes  # a chunked body: read (and cached) once
        if too_big:
            request.state.log = {"rejected": "body too large"}
            return JSONResponse(status_code=413, content={"detail": f"request body over max_body_bytes={max_body_bytes}"})
        return await call_next(request)

    @app.middleware("http")
    async def access_log(request: Request, call_next):
        t0 = time.perf_counter()
        response = await call_next(request)
        if not request.url.path.endswith("/stream"):  # the stream logs itself when it ends
            _event("request", method=request.method, path=request.url.path, status=response.status_code,
                   latency_s=round(time.perf_counter() - t0, 4), **getattr(request.state, "log", {}))
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        errors = [{"loc": list(e.get("loc", [])), "msg": e.get("msg"), "type": e.get("type")} for e in exc.errors()]
        request.state.log = {"invalid_fields": [e["loc"][-1] for e in errors if e["loc"]]}
        return JSONResponse(status_code=422, content={"detail": errors})

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": model_name, "programs": sorted(served)}

    @app.get("/programs")
    async def programs():
        return {n: {"inputs": list(s.inputs), "outputs": s.outputs, "answer_field": s.answer_field,
                    "source": s.manifest.get("source"), "scores": s.manifest.get("scores") or {},
                    "signature_hash": s.manifest.get("signature_hash"),
                    "schema_version": s.manifest.get("schema_version"),
                    "adapter": type(s.adapter).__name__ if s.adapter is not None else None} for n, s in served.items()}

    async def run_one(s: Served, inputs: dict, request: Request | None = None) -> dict:
        t0 = time.perf_counter()
        try:
            with dspy.context(adapter=s.adapter):
                pred = await asyncio.wait_for(s.call(**inputs), timeout=timeout_s)
        except asyncio.TimeoutError:
            raise HTTPException(504, f"program {s.name!r} took longer than timeout_s={timeout_s}") from None
        except Exception as exc:
            if _too_long(exc):
                raise HTTPException(422, f"the inputs are too long for {model_name}'s context window: "
                                         f"{str(exc).splitlines()[0][:300]}") from exc
            log.warning("program failed", extra={"fields": {"program": s.name, "error": repr(exc)[:300]}})
            raise HTTPException(502, f"program {s.name!r} failed: {str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__}") from exc
        usage = _usage(pred)
        if request is not None:
            request.state.log = {"program": s.name, **usage}
        return {"program": s.name, "outputs": _outputs(s, pred), "latency_s": round(time.perf_counter() - t0, 4),
                "usage": usage}

    def add_routes(s: Served):
        Body = s.input_model

        async def predict(body: Body, request: Request):  # type: ignore[valid-type]
            return await run_one(s, body.model_dump(), request)

        async def stream(body: Body):  # type: ignore[valid-type]
            inputs = body.model_dump()
            streamed = dspy.streamify(s.program, stream_listeners=[LenientStreamListener(s.answer_field)],
                                      async_streaming=True)

            async def events():
                t0, n_tokens, status = time.perf_counter(), 0, "ok"
                usage: dict = {}
                try:
                    async with asyncio.timeout(timeout_s):
                        with dspy.context(adapter=s.adapter):  # contextvars: this request's task only
                            async for item in streamed(**inputs):
                                if isinstance(item, dspy.streaming.StreamResponse):
                                    if not item.chunk:  # the listener's end marker; the prediction event ends it
                                        continue
                                    n_tokens += 1
                                    yield _sse("token", {"field": item.signature_field_name, "chunk": item.chunk})
                                elif isinstance(item, dspy.Prediction):
                                    usage = _usage(item)
                                    yield _sse("prediction", {"program": s.name, "outputs": _outputs(s, item),
                                                              "latency_s": round(time.perf_counter() - t0, 4),
                                                              "usage": usage})
                except TimeoutError:
                    status = "timeout"
                    yield _sse("error", {"detail": f"program {s.name!r} took longer than timeout_s={timeout_s}"})
                except Exception as exc:
                    status = "error"
                    what = "its inputs are too long for the model's context window" if _too_long(exc) else "failed"
                    yield _sse("error", {"detail": f"program {s.name!r} {what}: {str(exc)[:300]}"})
                finally:
                    _event("request", method="POST", path=f"/programs/{s.name}/stream", status=status,
                           program=s.name, stream_chunks=n_tokens, latency_s=round(time.perf_counter() - t0, 4),
                           **usage)

            return StreamingResponse(events(), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

        app.post(f"/programs/{s.name}", summary=f"Run {s.name}", tags=["programs"],
                 description=f"Inputs: {', '.join(s.inputs)}. Outputs: {', '.join(s.outputs)}.")(predict)
        app.post(f"/programs/{s.name}/stream", summary=f"Stream {s.name} (SSE)", tags=["programs"],
                 description=f"Server-Sent Events: `token` events for `{s.answer_field}`, then `prediction`.",
                 response_class=StreamingResponse)(stream)

    for s in served.values():
        add_routes(s)

    class EnsembleRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        inputs: dict[str, Any]
        programs: list[str] | None = Field(None, description="default: every served program")
        strategy: Literal["majority", "best_of"] = "majority"

    @app.post("/ensemble", tags=["ensemble"])
    async def ensemble(req: EnsembleRequest, request: Request):
        names = req.programs or sorted(served)
        unknown = [n for n in names if n not in served]
        if unknown:
            raise HTTPException(404, f"unknown programs {unknown}; serving {sorted(served)}")
        chosen = [served[n] for n in names]
        errors, seen = [], set()
        for s in chosen:  # the inputs each program takes, checked as its own route checks them
            try:
                s.input_model.model_validate({k: req.inputs[k] for k in s.inputs if k in req.inputs})
            except ValidationError as exc:
                for e in exc.errors():
                    loc = ("body", "inputs", *e.get("loc", ()))
                    if loc not in seen:
                        seen.add(loc)
                        errors.append({"loc": list(loc), "msg": e.get("msg"), "type": e.get("type")})
        needed = {f for s in chosen for f in s.inputs}
        errors += [{"loc": ["body", "inputs", k], "msg": "Extra inputs are not permitted", "type": "extra_forbidden"}
                   for k in sorted(set(req.inputs) - needed)]
        if errors:
            request.state.log = {"invalid_fields": [e["loc"][-1] for e in errors]}
            return JSONResponse(status_code=422, content={"detail": errors})
        t0 = time.perf_counter()
        results = await asyncio.gather(*[run_one(s, {k: req.inputs[k] for k in s.inputs}) for s in chosen],
                                       return_exceptions=True)
        answers, per_program = {}, {}
        for s, res in zip(chosen, results):
            if isinstance(res, Exception):
                per_program[s.name] = {"error": getattr(res, "detail", str(res))}
            else:
                per_program[s.name] = res
                answers[s.name] = res["outputs"].get(s.answer_field)
        if not answers:
            raise HTTPException(502, {"msg": "every program failed", "programs": per_program})
        rank = {s.name: (s.score if s.score is not None else float("-inf")) for s in chosen}
        if req.strategy == "majority":
            votes = Counter(str(a).strip().lower() for a in answers.values())
            top = max(votes.values())
            tied = [n for n, a in answers.items() if votes[str(a).strip().lower()] == top]
            winner = max(tied, key=lambda n: rank[n])  # a tie goes to the best-scoring program
        else:
            votes = None
            winner = max(answers, key=lambda n: rank[n])
        usage: dict[str, int] = {}
        for r in per_program.values():
            for k, v in (r.get("usage") or {}).items():
                usage[k] = usage.get(k, 0) + v
        request.state.log = {"programs": names, "strategy": req.strategy, **usage}
        return {"strategy": req.strategy, "answer": answers[winner], "chosen": winner,
                "votes": dict(votes) if votes else None, "programs": per_program,
                "latency_s": round(time.perf_counter() - t0, 4), "usage": usage}

    return app


# --------------------------------------------------------------------------- entrypoint

def prepare(cfg: DictConfig):
    """LM + adapter + programs from the config; returns the app (also used by tests)."""
    import dspy
    from hydra.utils import instantiate

    instantiate(cfg.cache)
    adapter = instantiate(cfg.adapter) if cfg.get("adapter") else None
    served = load_served(_entries(cfg.programs), cfg.tracking.tracking_uri, cfg.allow_pickle, adapter)
    lm = instantiate(cfg.model)
    dspy.configure(lm=lm, adapter=adapter, track_usage=True)
    return build_app(served, lm.model, float(cfg.timeout_s), int(cfg.max_body_bytes))


@hydra.main(config_path=CONF_DIR, config_name="serve", version_base="1.3")
def main(cfg: DictConfig) -> None:
    import uvicorn

    setup_logging(cfg.log_level)
    try:
        app = prepare(cfg)
    except Exception as exc:
        err = find_user_error(exc)  # a RunnerError, also when Hydra's instantiate wrapped it
        if err is None:
            raise
        exit_with(err)
    _event("serving", host=cfg.host, port=cfg.port, openapi=f"http://{cfg.host}:{cfg.port}/openapi.json")
    uvicorn.run(app, host=cfg.host, port=int(cfg.port), log_config=None, access_log=False,
                timeout_graceful_shutdown=5)


if __name__ == "__main__":
    main()
