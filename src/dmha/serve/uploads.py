"""Receive a multipart upload by streaming it into the service's own temp folder.

FastAPI's `UploadFile` would first spool the whole body to the system temp dir, whatever its
size; here the bytes go straight into a file the service names itself (never the client's
name), counted as they arrive, and the request stops at the size limit (413) or the upload
deadline (408). The file is removed when the `received_upload` block ends, however it ends.
"""
from __future__ import annotations

import asyncio
import logging
import os
import re
import tempfile
import unicodedata
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import AsyncIterator

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header
from starlette.requests import ClientDisconnect, Request

log = logging.getLogger(__name__)

FILE_FIELD = "file"
MAX_FIELD_BYTES = 128 * 1024  # each text field (a 20,000-character transcript fits); bounds memory per request
MAX_PARTS = 8
_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".webm", ".mka",
                       ".m4a", ".mp4", ".aac"})
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]")
# control, format (bidi overrides, zero-width), surrogate, private, unassigned, line/paragraph separators:
# shown to a person, they could disguise the name ("evil\u202egnp.wav" displays as "evilvaw.png")
_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


class UploadError(Exception):
    """A request the service refuses before decoding: `status` is the HTTP code, the message one line."""

    def __init__(self, status: int, message: str):
        self.status = status
        super().__init__(message)


@dataclass
class Upload:
    """A received request: the audio in a service-named temp file, its client name made safe, text fields."""

    path: Path
    name: str
    size: int
    fields: dict[str, str] = field(default_factory=dict)


def safe_name(filename: str | None) -> str:
    """The client's file name reduced to a harmless display name: last path component, no control chars."""
    text = unicodedata.normalize("NFC", filename or "")
    base = re.split(r"[/\\]", text)[-1]
    base = "".join("_" if unicodedata.category(c) in _INVISIBLE else c for c in _UNSAFE.sub("_", base))
    base = base.strip(" .")
    return base[:120] or "upload"


@asynccontextmanager
async def received_upload(request: Request, tmp_dir: Path, max_bytes: int, timeout_s: float
                          ) -> AsyncIterator[Upload]:
    """Stream `request`'s multipart body into `tmp_dir`; yields the Upload, then removes its file."""
    boundary = _boundary(request)
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes + MAX_PARTS * MAX_FIELD_BYTES:
        raise UploadError(413, _too_large(max_bytes))
    reader = _MultipartReader(boundary, tmp_dir, max_bytes)
    try:
        try:
            async with asyncio.timeout(timeout_s):
                async for chunk in request.stream():
                    reader.feed(chunk)
            reader.finish()
        except TimeoutError:
            raise UploadError(408, f"the upload did not arrive within {timeout_s:g} s") from None
        except ClientDisconnect:
            raise UploadError(400, "the client disconnected during the upload") from None
        yield reader.upload()
    finally:
        reader.remove()


def _boundary(request: Request) -> bytes:
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data":
        raise UploadError(415, "send multipart/form-data with the audio in a part named 'file'")
    boundary = params.get(b"boundary")
    if not boundary or len(boundary) > 200:
        raise UploadError(400, "malformed multipart request: missing or invalid boundary")
    return boundary


def _too_large(max_bytes: int) -> str:
    return f"the upload is larger than the service's limit of {max_bytes / 2**20:.3g} MB"


class _MultipartReader:
    """python-multipart callbacks: the one file part goes to a temp file, text parts to memory."""

    def __init__(self, boundary: bytes, tmp_dir: Path, max_bytes: int):
        self.tmp_dir, self.max_bytes = tmp_dir, max_bytes
        self.fields: dict[str, str] = {}
        self.path: Path | None = None
        self.name, self.size, self.parts = "upload", 0, 0
        self._handle = None
        self._header_name, self._header_value, self._disposition = b"", b"", b""
        self._part: str | None = None  # field name of the current text part; None while in the file part
        self._data = bytearray()
        self._parser = MultipartParser(boundary, {
            "on_part_begin": self._on_part_begin, "on_part_data": self._on_part_data,
            "on_part_end": self._on_part_end, "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value, "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished,
        })

    def feed(self, chunk: bytes) -> None:
        try:
            self._parser.write(chunk)
        except FormParserError as err:
            raise UploadError(400, f"malformed multipart request ({err})") from None

    def finish(self) -> None:
        try:
            self._parser.finalize()
        except FormParserError as err:
            raise UploadError(400, f"malformed multipart request ({err})") from None
        if self._parser.state != MultipartState.END:  # python-multipart does not check this itself
            raise UploadError(400, "malformed multipart request: the body ended before the closing boundary")
        self._close_file()

    def upload(self) -> Upload:
        if self.path is None:
            raise UploadError(422, "no audio: send the file in a multipart part named 'file'")
        return Upload(self.path, self.name, self.size, dict(self.fields))

    def remove(self) -> None:
        self._close_file()
        if self.path is not None:
            self.path.unlink(missing_ok=True)

    def _close_file(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def _on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise UploadError(400, f"malformed multipart request: more than {MAX_PARTS} parts")
        self._disposition, self._part, self._data = b"", None, bytearray()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]
        if len(self._header_value) > 4096:
            raise UploadError(400, "malformed multipart request: part header too long")

    def _on_header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name, self._header_value = b"", b""

    def _on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if not name:
            raise UploadError(400, "malformed multipart request: a part has no name")
        if name != FILE_FIELD:
            self._part = name
            return
        if self.path is not None:
            raise UploadError(422, "send one audio file per request")
        self.name = safe_name(options.get(b"filename", b"").decode("utf-8", "replace"))
        suffix = PurePath(self.name).suffix.lower()
        fd, path = tempfile.mkstemp(dir=self.tmp_dir, prefix="upload-", suffix=suffix if suffix in _SUFFIXES else "")
        self.path, self._handle = Path(path), os.fdopen(fd, "wb")

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part is not None:
            if len(self._data) + end - start > MAX_FIELD_BYTES:
                raise UploadError(413, f"form field '{self._part}' is over {MAX_FIELD_BYTES // 1024} KB")
            self._data += data[start:end]
            return
        self.size += end - start
        if self.size > self.max_bytes:
            raise UploadError(413, _too_large(self.max_bytes))
        self._handle.write(data[start:end])

    def _on_part_end(self) -> None:
        if self._part is not None:
            self.fields[self._part] = self._data.decode("utf-8", "replace")
        else:
            self._close_file()
