"""The FastAPI app: predict endpoints, model info, health, and the web page at `/`.

Every request streams its upload into the service's temp folder, decodes it off the event loop,
and hands the waveform to the micro-batcher; the event loop never runs torch.
"""
from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import threading
import time
from concurrent.futures import Future
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.middleware.trustedhost import TrustedHostMiddleware
from typing import Any

try:
    from fastapi import FastAPI, Request
    from fastapi.responses import FileResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles
    from fastapi_offline import FastAPIOffline  # /docs and /redoc with their scripts from the package, no CDN
    from pydantic import BaseModel, ConfigDict
except ImportError as err:  # one line for the CLI; the rest of dmha works without the extra
    raise ImportError(f"dmha serve needs the [serve] extra ({err.name} is missing): "
                      "pip install 'dmha[serve]'") from None

from .. import __version__
from ..audio import AudioError
from ..encoders.registry import uses_text
from .batcher import BatcherClosed, MicroBatcher, QueueFull
from .decode import decode_upload, long_upload_input
from .settings import ServeSettings
from .uploads import Upload, UploadError, received_upload

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"


class PredictionOut(BaseModel):
    """One clip's result, the `predict --format jsonl` record; `votes` only for ensembles, `attributes`
    ({name: value} in each attribute's scale) only for models that predict them, `label` null for an
    attribute-only model; `reason` only when the clip was given no emotion (label null, probs empty:
    the speech gate heard no speech in it)."""

    path: str
    label: str | None
    probs: dict[str, float]
    transcript: str
    attributes: dict[str, float] | None = None
    votes: dict[str, str] | None = None
    reason: str | None = None


class SegmentOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    start: float
    end: float
    label: str
    probs: dict[str, float]
    transcript: str


class TimelineOut(BaseModel):
    """A long recording's timeline: one prediction per speech segment (seconds from the start)."""

    model_config = ConfigDict(extra="allow")
    path: str
    duration: float
    segments: list[SegmentOut]


class ErrorOut(BaseModel):
    detail: str


_ERRORS = {code: {"model": ErrorOut, "description": text} for code, text in (
    (400, "malformed multipart request"), (408, "the upload was too slow"), (413, "upload over the size limit"),
    (415, "not multipart/form-data"), (422, "no file, undecodable audio, too long, or a bad or unknown field"),
    (500, "the model failed on this input"), (503, "queue full, too many connections, or service stopping"),
    (504, "no result within the request timeout"))}


def _multipart_body(extra: dict[str, Any]) -> dict:
    """The OpenAPI request body: the endpoints read the stream themselves, so declare it by hand."""
    properties = {"file": {"type": "string", "format": "binary", "description": "audio (wav, flac, ogg/opus, "
                                                                                 "mp3, webm/opus, mp4/aac)"}}
    properties.update(extra)
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {
        "schema": {"type": "object", "required": ["file"], "properties": properties, "additionalProperties": False},
        "encoding": {"file": {"contentType": "audio/*"}}}}}}  # the part's type is not checked; its bytes are


class _ModelFailure(Exception):
    """The model raised on one upload: a 500 naming the upload, without a traceback for the client."""

    def __init__(self, name: str, err: Exception):
        super().__init__(f"{name}: prediction failed ({type(err).__name__}: {' '.join(str(err).split())[:200]})")


class Service:
    """What the endpoints share: the recognizer, its batcher, the limits and the temp folder."""

    def __init__(self, recognizer, settings: ServeSettings):
        self.recognizer, self.settings = recognizer, settings
        self.batcher = MicroBatcher(recognizer.predict_waves, window_s=settings.batch_window_ms / 1000,
                                    max_batch=settings.max_batch, queue_size=settings.queue_size)
        self.tmp_dir: Path | None = None
        self._decode_slots: asyncio.Semaphore | None = None

    def start(self) -> None:
        """Make the temp folder and start the worker (the app's lifespan calls this)."""
        self.tmp_dir = Path(tempfile.mkdtemp(prefix="dmha-serve-", dir=self.settings.tmp_dir))
        self._decode_slots = asyncio.Semaphore(self.settings.max_decodes)  # in the serving loop
        self.batcher.start()
        log.info("serving %s; uploads in %s", self.recognizer.labels, self.tmp_dir)

    def close(self) -> None:
        """Stop the worker, then remove the temp folder with anything a cancelled request left."""
        self.batcher.close()
        if self.tmp_dir is not None:
            shutil.rmtree(self.tmp_dir, ignore_errors=True)

    def upload(self, request: Request):
        """`async with service.upload(request) as upload:` the request's audio in the temp folder."""
        return received_upload(request, self.tmp_dir, self.settings.max_upload_bytes, self.settings.upload_timeout_s)

    async def decode(self, fn, *args, started: float, limit: float, what: str):
        """`fn(*args)` in a thread, at most `max_decodes` running at once: a decoded minute of 192 kHz audio
        is ~0.1 GB. A thread cannot be stopped, so a request that times out while its decode runs answers
        504 at once, but its slot is freed by the decode's own end, never by the request leaving: slots
        count running decodes, whatever happened to the requests that started them."""
        try:
            async with asyncio.timeout(limit - (time.monotonic() - started)):
                await self._decode_slots.acquire()
                # no await between acquiring and handing the slot to the job: a timeout cannot fall between
                job = asyncio.get_running_loop().run_in_executor(None, fn, *args)
                job.add_done_callback(self._free_decode_slot)
                return await asyncio.shield(job)  # a timeout abandons the wait, not the job
        except TimeoutError:
            raise _too_slow(what, limit) from None

    def _free_decode_slot(self, job: asyncio.Future) -> None:
        """A decode ended (its result or error is the request's, if it still waits): free its slot."""
        if not job.cancelled():
            job.exception()  # retrieved, so an abandoned job's error is not reported as never retrieved
        self._decode_slots.release()

    def model_info(self) -> dict:
        """GET /v1/model: for an ensemble, `thresholds` is None and each member lists its own."""
        members = [_member_info(m) for m in self.recognizer.members]
        lead = members[0]
        rec = self.recognizer
        return {"labels": rec.labels if rec.predicts_category else [],
                "attributes": {name: list(bounds) for name, bounds in rec.attribute_ranges.items()},
                "ensemble": len(members) > 1, "encoders": lead["encoders"], "reads_text": rec.reads_text,
                "thresholds": lead["thresholds"] if len(members) == 1 else None, "members": members,
                "limits": self.settings.public(), "dmha_version": __version__, "card": _card(self.recognizer)}


def _card(recognizer) -> str | None:
    """The lead model's MODEL_CARD.md (what it is for, its data and figures, its limits), when it has one."""
    directory = recognizer.members[0].bundle.directory
    card = directory / "MODEL_CARD.md" if directory is not None else None
    if card is None or not card.is_file():
        return None
    from ..pretrained import card_text

    return card_text(card.read_text(encoding="utf-8"))


def _member_info(member) -> dict:
    """A member's encoders (names and weight identities, never a path of this machine; `asr` None for a
    speech-only model, which runs none) and the decision rule it actually applies (thresholds may be
    switched off)."""
    enc, rule, bundle = member.bundle.config.encoders, member.rule, member.bundle
    thresholds = None if rule.thresholds is None else dict(zip(rule.labels, map(float, rule.thresholds)))
    asr = public_name(enc.asr) if uses_text(enc) else None
    return {"name": member.name,
            "encoders": {"speech": public_name(enc.speech), "text": public_name(enc.text), "asr": asr},
            "identities": {"speech": public_identity(bundle.speech.identity),
                           "text": public_identity(bundle.text.identity)},
            "thresholds": thresholds, "prior_correction": rule.prior_target is not None,
            "temperature": bundle.model.temperature}  # probabilities are softmax(logits / temperature)


def public_name(name: str) -> str:
    """A registry name or Hub id as is; a local directory as `local:<its folder name>`, so the
    service never tells a client where its files live."""
    text = str(name)
    if text.startswith(("/", ".", "~", "\\")) or (len(text) > 1 and text[1] == ":") or Path(text).exists():
        return f"local:{Path(text).name or text.strip('/')}"
    return text


def public_identity(identity: str) -> str:
    """`kind:label@fingerprint|options` with the label made public (the fingerprint names the weights)."""
    head, sep, options = identity.partition("|")
    kind, colon, rest = head.partition(":")
    label, at, fingerprint = rest.rpartition("@")
    if not (colon and at):
        return public_name(identity)
    return f"{kind}:{public_name(label)}@{fingerprint}{sep}{options}"


async def _result(future: Future, started: float, limit: float, what: str):
    """Wait for the worker without blocking the loop; a timed-out job is cancelled if not yet started."""
    try:
        return await asyncio.wait_for(asyncio.wrap_future(future), limit - (time.monotonic() - started))
    except TimeoutError:
        future.cancel()
        raise _too_slow(what, limit) from None


def _too_slow(what: str, limit: float) -> UploadError:
    return UploadError(504, f"{what} did not finish within {limit:g} s (the service is busy); try again later")


def _check_fields(upload: Upload, allowed: tuple[str, ...], endpoint: str) -> None:
    """Unknown fields are refused, not ignored: a mistyped `transcipt` would silently mean 'run ASR'."""
    unknown = sorted(set(upload.fields) - set(allowed))
    if unknown:
        raise UploadError(422, f"unknown form field {unknown[0][:40]!r}: {endpoint} takes file, {', '.join(allowed)}")


def _transcript(upload: Upload, settings: ServeSettings) -> str | None:
    """The `transcript` field; absent or blank means 'transcribe with ASR'."""
    text = upload.fields.get("transcript", "").strip()
    if len(text) > settings.max_transcript_chars:
        raise UploadError(422, f"transcript is over {settings.max_transcript_chars} characters")
    return text or None


_SEGMENT_S = {"min_s": 2.0, "max_s": 15.0}  # predict_long's defaults
_SEGMENT_RANGE_S = (0.5, 60.0)


def _segment_bounds(upload: Upload) -> dict[str, float]:
    """Optional `min_s` / `max_s` fields of /v1/predict-long, checked; one alone moves the other's default."""
    low, high = _SEGMENT_RANGE_S
    bounds = {}
    for key in ("min_s", "max_s"):
        if upload.fields.get(key, "").strip():
            try:
                bounds[key] = float(upload.fields[key])
            except ValueError:
                raise UploadError(422, f"{key} must be a number of seconds") from None
            if not low <= bounds[key] <= high:  # also refuses nan and inf
                raise UploadError(422, f"{key} must be between {low:g} and {high:g} s")
    if len(bounds) == 2 and bounds["min_s"] > bounds["max_s"]:
        raise UploadError(422, "min_s must not exceed max_s")
    if "min_s" in bounds:  # min_s=20 alone means segments of 20 s or more, not an error against max_s's default
        bounds.setdefault("max_s", max(bounds["min_s"], _SEGMENT_S["max_s"]))
    if "max_s" in bounds:
        bounds.setdefault("min_s", min(bounds["max_s"], _SEGMENT_S["min_s"]))
    return bounds


def create_app(recognizer, settings: ServeSettings | None = None) -> FastAPI:
    """The service around a loaded EmotionRecognizer; the worker starts with the app's lifespan.

    Example:
        >>> app = create_app(EmotionRecognizer.load("runs/x/model"), ServeSettings(max_batch=4))  # doctest: +SKIP
        >>> uvicorn.run(app, host="127.0.0.1", port=8000)                                        # doctest: +SKIP
    """
    service = Service(recognizer, settings or ServeSettings())

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        service.start()
        try:
            yield
        finally:
            service.close()

    # FastAPI's own /docs and /redoc load Swagger UI and ReDoc from a CDN, so offline they are blank pages;
    # FastAPIOffline serves the same pages with the scripts from the fastapi-offline package.
    app = FastAPIOffline(title="dmha", version=__version__, lifespan=lifespan,
                         description="Speech emotion recognition (Double Multi-Head Attention). The web page is at /.")
    app.state.service = service
    if service.settings.allowed_hosts is not None and "*" not in service.settings.allowed_hosts:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(service.settings.allowed_hosts))
    _add_error_handlers(app)
    _add_info_routes(app, service)
    _add_predict_route(app, service)
    _add_long_route(app, service)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(UploadError)
    async def _upload_error(_request, err: UploadError):
        return JSONResponse({"detail": str(err)}, status_code=err.status)

    @app.exception_handler(AudioError)
    async def _audio_error(_request, err: AudioError):
        return JSONResponse({"detail": str(err)}, status_code=422)

    @app.exception_handler(QueueFull)
    async def _queue_full(_request, err: QueueFull):
        return JSONResponse({"detail": str(err)}, status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(_ModelFailure)
    async def _model_failure(_request, err: _ModelFailure):
        log.error("%s", err, exc_info=err.__cause__)
        return JSONResponse({"detail": str(err)}, status_code=500)

    @app.exception_handler(BatcherClosed)
    async def _closed(_request, err: BatcherClosed):
        return JSONResponse({"detail": str(err)}, status_code=503)


def _add_info_routes(app: FastAPI, service: Service) -> None:
    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/healthz")
    async def healthz():
        """Liveness: 200 while the prediction worker runs, 503 otherwise."""
        alive = service.batcher.alive
        body = {"status": "ok" if alive else "worker stopped", "queued": service.batcher.pending,
                **service.batcher.stats}
        return JSONResponse(body, status_code=200 if alive else 503)

    @app.get("/v1/model")
    async def model():
        """Labels, encoders, whether the model reads transcripts, thresholds, ensemble members and the limits."""
        return service.model_info()


def _add_predict_route(app: FastAPI, service: Service) -> None:
    settings = service.settings
    transcript_field = {"type": "string", "maxLength": settings.max_transcript_chars,
                        "description": "optional; absent or blank: transcribed by ASR"}

    @app.post("/v1/predict", response_model=PredictionOut, response_model_exclude_none=True, responses=_ERRORS,
              openapi_extra=_multipart_body({"transcript": transcript_field}))
    async def predict(request: Request):
        """One clip → its emotion (micro-batched with concurrent requests)."""
        async with service.upload(request) as upload:
            _check_fields(upload, ("transcript",), "/v1/predict")
            started, transcript = time.monotonic(), _transcript(upload, settings)
            wave = await service.decode(decode_upload, upload.path, upload.name, settings.max_duration_s,
                                        started=started, limit=settings.timeout_s, what="the prediction")
        future = service.batcher.submit(wave, transcript)
        try:
            pred = await _result(future, started, settings.timeout_s, "the prediction")
        except UploadError:
            raise
        except Exception as err:  # the model failed on this item only; its batch-mates got their results
            raise _ModelFailure(upload.name, err) from err
        return {**pred.to_dict(), "path": upload.name}


def _add_long_route(app: FastAPI, service: Service) -> None:
    settings = service.settings
    low, high = _SEGMENT_RANGE_S
    segment_field = {"type": "number", "minimum": low, "maximum": high}

    @app.post("/v1/predict-long", response_model=TimelineOut, responses=_ERRORS, openapi_extra=_multipart_body({
        "min_s": {**segment_field, "description": "shortest segment, s (default 2; at most max_s)"},
        "max_s": {**segment_field, "description": "longest segment, s (default 15)"}}))
    async def predict_long(request: Request):
        """A long recording → a timeline of speech segments, each with its emotion (runs alone in the worker)."""
        async with service.upload(request) as upload:
            _check_fields(upload, ("min_s", "max_s"), "/v1/predict-long")
            started, bounds = time.monotonic(), _segment_bounds(upload)
            inputs, rate = await service.decode(long_upload_input, upload.path, upload.name,
                                                settings.max_long_duration_s, started=started,
                                                limit=settings.long_timeout_s, what="the timeline")
            deadline = started + settings.long_timeout_s
            stop = threading.Event()  # set when the request gives up; the job checks it between segments
            future = service.batcher.submit_call(
                lambda: service.recognizer.predict_long(
                    inputs, sample_rate=rate, max_seconds=settings.max_long_duration_s,
                    should_stop=lambda: stop.is_set() or time.monotonic() > deadline, **bounds))
            try:  # the file stays until predict_long has let go of it
                timeline = await _result(future, started, settings.long_timeout_s, "the timeline")
            except UploadError:  # too slow: stop the job and wait until it has (at most one batch of segments)
                stop.set()
                if not future.cancel():
                    await asyncio.wait([asyncio.wrap_future(future)])
                raise
            except AudioError as err:
                raise AudioError(upload.name, err.reason) from None
            except Exception as err:
                raise _ModelFailure(upload.name, err) from err
        return {**timeline.to_dict(), "path": upload.name}
