"""Photos of incidents over HTTP: reading photo uploads within their bounds, a unit's
photos added to an incident's timeline, and serving the copies. Thin: the core
(twin.incidents.photos) checks, re-encodes and stores.

Who may call: adding photos and reading an original (with its EXIF: where and when it was
taken) are staff's; ``GET /photos/{id}`` is public and serves the public copy alone, which
holds no metadata, under an id nobody can guess (the views list it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

import anyio
import psycopg
from fastapi import APIRouter, Path, Request, Response
from fastapi import status as http
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from api.access import IncidentStaff, Public
from api.deps import FastJSON, IfNoneMatch, KnownParameters, Plain, etag_matches, with_connection
from api.errors import TooLarge
from twin.errors import InvalidInput
from twin.incidents import intake, photos

router = APIRouter(tags=["incidents"])
TEXT_PART_KB = 64  # a report's JSON or a note; as a JSON body of the intake routes
PART_OVERHEAD = 16 * 1024  # the boundary and headers of a part, generously
PhotoId = Annotated[str, Path(max_length=100)]
IncidentId = Annotated[int, Path(ge=1, le=2**63 - 1), Plain]
PUBLIC_CACHE = "public, max-age=86400"  # a photo's bytes never change under its id
PHOTO_FORM = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "photo": {"type": "array",
                                  "items": {"type": "string", "format": "binary"}},
                        "note": {"type": "string"},
                    },
                    "required": ["photo"],
                }
            }
        },
    }
}  # fmt: skip


@dataclass(frozen=True)
class PhotoForm:
    """A photo upload read: its text parts by name, and the photos' bytes in order."""

    text: dict[str, str | bytes]
    photos: list[bytes]


def limits(request: Request) -> photos.Limits:
    """The photo limits this server was given (TWIN_MAX_PHOTO_MB, …_MEGAPIXELS)."""
    settings = request.app.state.settings.photos
    return photos.Limits(max_bytes=settings.max_photo_mb * 1024 * 1024,
                         max_pixels=settings.max_photo_megapixels * 1_000_000)  # fmt: skip


def is_form(request: Request) -> bool:
    """Whether the body is a multipart form (else it is read as JSON)."""
    return request.headers.get("content-type", "").lower().startswith("multipart/form-data")


async def _bounded(request: Request, limit: int, too_large: TooLarge) -> AsyncIterator[bytes]:
    """The body's chunks, refused as soon as they pass ``limit`` bytes, before more is read
    (a body without Content-Length, or one that lied about it)."""
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            raise too_large
        yield chunk


async def photo_form(request: Request, text_parts: tuple[str, ...], usage: str) -> PhotoForm:
    """The multipart body as ``text_parts`` (each at most once, at most TEXT_PART_KB) and
    ``photo`` parts (files, at most TWIN_MAX_PHOTOS_PER_REPORT, each at most
    TWIN_MAX_PHOTO_MB), bounded before it is read: a declared length over the whole bound
    is refused unread, and the reading stops past it. ``usage`` says in a refusal how the
    form is made (e.g. ``curl -F report=… -F photo=@a.jpg``)."""
    settings = request.app.state.settings.photos
    bound = limits(request)
    most = settings.max_photos_per_report
    limit = most * (bound.max_bytes + PART_OVERHEAD) + len(text_parts) * (
        TEXT_PART_KB * 1024 + PART_OVERHEAD
    )
    too_large = TooLarge(
        f"the upload is larger than {limit / 1024 / 1024:.1f} MB, the most {most} photos of "
        f"{settings.max_photo_mb} MB each and their text may be"
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    parser = MultiPartParser(
        request.headers, _bounded(request, limit, too_large), max_files=most + len(text_parts),
        max_fields=len(text_parts) + 5, max_part_size=TEXT_PART_KB * 1024,
    )  # fmt: skip
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise _refusal(exc.message, most, usage) from None
    try:
        return await _read(form.multi_items(), text_parts, most, bound, usage)
    finally:
        await form.close()


def _refusal(message: str, most: int, usage: str) -> InvalidInput | TooLarge:
    """The form parser's complaint in the caller's terms."""
    if message.startswith("Part exceeded maximum size"):
        return TooLarge(f"a text part of the form is larger than {TEXT_PART_KB} KB; a report's"
                        " JSON or a note is a few fields")  # fmt: skip
    if message.startswith("Too many files"):
        return InvalidInput(f"at most {most} photos in one upload (TWIN_MAX_PHOTOS_PER_REPORT)",
                            option="photo")  # fmt: skip
    if message.startswith("Too many fields"):
        return InvalidInput(f"the form has too many text parts; {usage}")
    return InvalidInput(f"the form cannot be read as multipart/form-data; {usage}")


async def _read(items: list[tuple[str, str | UploadFile]], text_parts: tuple[str, ...],
                most: int, bound: photos.Limits, usage: str) -> PhotoForm:  # fmt: skip
    names = [name for name, _ in items]
    takes = ", ".join((*text_parts, "photo"))
    unknown = [n.replace("\x00", "")[:40] for n in dict.fromkeys(names)
               if n not in (*text_parts, "photo")]  # fmt: skip
    if unknown:
        raise InvalidInput(f"unknown form part {unknown[0]!r}; the form takes {takes}: {usage}")
    twice = [n for n in text_parts if names.count(n) > 1]
    if twice:
        raise InvalidInput(f"form part {twice[0]!r} is given more than once; give it once")
    if names.count("photo") > most:
        raise InvalidInput(f"at most {most} photos in one upload (TWIN_MAX_PHOTOS_PER_REPORT)",
                           option="photo")  # fmt: skip
    text: dict[str, str | bytes] = {}
    found: list[bytes] = []
    for name, value in items:
        if name == "photo":
            if not isinstance(value, UploadFile):
                raise InvalidInput(f"form part photo holds text, not a file: send each photo as "
                                   f"a file part, {usage}", option="photo")  # fmt: skip
            label = f"photo {len(found) + 1}"
            photos.check_size(value.size or 0, bound, label)  # before it is read into memory
            found.append(await value.read())
        elif isinstance(value, UploadFile):  # the report's JSON sent as a file: as bounded
            data = await value.read(TEXT_PART_KB * 1024 + 1)
            if len(data) > TEXT_PART_KB * 1024:
                raise TooLarge(f"form part {name} is larger than {TEXT_PART_KB} KB")
            text[name] = data
        else:
            text[name] = value
    return PhotoForm(text, found)


async def prepared(request: Request, uploaded: list[bytes]) -> list[photos.Prepared]:
    """The uploaded photos checked and their public copies made, off the event loop and
    before any connection is taken (decoding a photo takes a while)."""
    bound = limits(request)

    def run() -> list[photos.Prepared]:
        return [photos.prepare(data, bound, label=f"photo {n}")
                for n, data in enumerate(uploaded, 1)]  # fmt: skip

    return await anyio.to_thread.run_sync(run)


ADD_USAGE = "e.g. curl -F photo=@after.jpg -F note=修复完成"


@router.post("/incidents/{incident_id}/photos", dependencies=[KnownParameters],
             openapi_extra=PHOTO_FORM, response_class=FastJSON,
             status_code=http.HTTP_201_CREATED,
             summary="Add photos to an incident's timeline (incident staff)")  # fmt: skip
async def add_photos(request: Request, caller: IncidentStaff, incident_id: IncidentId) -> FastJSON:
    """A multipart form of one or more ``photo`` files (JPEG, PNG or WebP) and a ``note``:
    a unit's photo before or after the work, as a ``photo_added`` step of the timeline.
    201 with the incident as staff see it (its ``photos`` and the step's ``photos``); 413
    for a photo over its bytes or pixels, 415 for a file that is no JPEG, PNG or WebP,
    400 for one truncated or corrupt, 404 for an unknown incident."""
    if not is_form(request):
        raise InvalidInput(f"send the photos as multipart/form-data, {ADD_USAGE}")
    form = await photo_form(request, ("note",), ADD_USAGE)
    note = form.text.get("note", "")
    if isinstance(note, bytes):
        try:
            note = note.decode()
        except UnicodeDecodeError:
            raise InvalidInput("note is not UTF-8 text", option="note") from None
    ready = await prepared(request, form.photos)

    def add(conn: psycopg.Connection) -> dict[str, object]:
        intake.check_scope(conn, incident_id, caller)
        photos.add_to_timeline(conn, incident_id, ready, actor=caller.name, note=note)
        return intake.get(conn, incident_id, caller)

    view = await with_connection(request, add)
    return FastJSON(view, status_code=http.HTTP_201_CREATED,
                    headers={"ETag": f'"{view["version"]}"'})  # fmt: skip


def _photo(served: photos.Served, if_none_match: str | None, cache: str) -> Response:
    etag = f'"{served.sha256[:32]}"'
    headers = {"ETag": etag, "Cache-Control": cache, "X-Content-Type-Options": "nosniff"}
    if etag_matches(if_none_match, {etag}):
        return Response(status_code=http.HTTP_304_NOT_MODIFIED, headers=headers)
    return Response(served.data, media_type=served.media_type, headers=headers)


IMAGE_ANSWER = {200: {"content": {t: {} for t in photos.MEDIA_TYPES.values()},
                      "description": "The photo"}}  # fmt: skip


@router.get("/photos/{photo_id}", dependencies=[Public, KnownParameters],
            response_class=Response, responses=IMAGE_ANSWER,  # type: ignore[arg-type]
            summary="A photo of an incident, without its metadata (public)")  # fmt: skip
async def public_photo(
    request: Request,
    photo_id: PhotoId,
    if_none_match: IfNoneMatch = None,
) -> Response:
    """The public copy: upright, re-encoded with no EXIF, GPS or XMP; with its media type,
    an ETag (304 for ``If-None-Match``) and Cache-Control. 404 for an unknown id."""
    served = await with_connection(request, photos.served, photo_id)
    return _photo(served, if_none_match, PUBLIC_CACHE)


@router.get("/photos/{photo_id}/original", dependencies=[KnownParameters],
            response_class=Response, responses=IMAGE_ANSWER,  # type: ignore[arg-type]
            summary="A photo as it was uploaded, with its EXIF (incident staff)")  # fmt: skip
async def original_photo(
    request: Request,
    caller: IncidentStaff,
    photo_id: PhotoId,
    if_none_match: IfNoneMatch = None,
) -> Response:
    """The original bytes as uploaded, EXIF (GPS, time, camera) included: personal data,
    so staff only and never kept by a shared cache. 404 for an unknown id."""
    served = await with_connection(request, photos.served, photo_id, original=True)
    return _photo(served, if_none_match, "private, no-store")
