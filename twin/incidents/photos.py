"""Photos of incidents (随手拍): a resident's photos sent with a report, and the photos a
unit adds to the timeline (before and after the work).

Each photo is checked before anything is stored: a JPEG, PNG or WebP by its content (not
the name or the declared type), at most ``Limits.max_bytes`` bytes and
``Limits.max_pixels`` pixels (read from the header, before any decoding), and whole (a
truncated or corrupt file is refused). Two copies are kept in the data base (every API
process serves them): the **original** as uploaded, with its EXIF (GPS, camera, time) for
staff, and the **public** copy, turned upright by its EXIF orientation and re-encoded from
its pixels alone: no EXIF, GPS, XMP, comment or colour profile. Only the public copy is
ever shown to the public.

``prepare`` does the checking and the re-encoding (no data base: it runs before the
transaction); ``store`` keeps a prepared photo; ``check_and_store`` both.
``report_with_photos`` takes a report and its photos in one transaction;
``add_to_timeline`` adds a unit's photos as a step of the timeline. ``listing`` is what
the incident's views show of its photos; ``served`` a copy's bytes.
"""

from __future__ import annotations

import hashlib
import io
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from PIL import Image, ImageOps
from psycopg.rows import dict_row

from twin.errors import Conflict, InvalidInput, NotFound, TooLarge, UnsupportedMedia

TABLE = "incident_photos"
# Pillow's format name: the media type served, and how the public copy is re-encoded.
MEDIA_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
PUBLIC_SAVE = {"JPEG": {"quality": 85}, "PNG": {}, "WEBP": {"quality": 85}}
ID_BYTES = 16  # 128 random bits: an id nobody guesses
MAX_ID = 40
MAX_NOTE = 2000
PUBLIC_PATH = "/photos/{id}"  # where the public copy is served (api/routes/photos.py)
ORIGINAL_PATH = "/photos/{id}/original"  # staff only


@dataclass(frozen=True)
class Limits:
    """How big a photo may be: its bytes, and the pixels its header declares."""

    max_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000


@dataclass(frozen=True)
class Prepared:
    """A photo checked and its public copy made, ready to store."""

    media_type: str
    width: int  # of the public copy: upright
    height: int
    original: bytes
    public: bytes
    taken_at: datetime | None

    @property
    def original_sha256(self) -> str:
        """The original's digest: a retry of a report is known by it."""
        return hashlib.sha256(self.original).hexdigest()


@dataclass(frozen=True)
class Served:
    """One copy of a photo, as served: its bytes, media type and digest (for the ETag)."""

    data: bytes
    media_type: str
    sha256: str


def _kind(data: bytes) -> str | None:
    """Pillow's format of a JPEG, PNG or WebP, by the file's first bytes; None otherwise."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


_ISO_BRANDS = {b"heic": "a HEIC photo", b"heix": "a HEIC photo", b"mif1": "a HEIF photo",
               b"msf1": "a HEIF photo", b"hevc": "a HEIC photo", b"avif": "an AVIF image"}  # fmt: skip


def _other_kind(data: bytes) -> str:
    """What a file that is no JPEG, PNG or WebP is, in words, by its first bytes."""
    head = data[:512]
    if not data:
        return "an empty file"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "a GIF image"
    if head.startswith(b"%PDF"):
        return "a PDF document"
    if head.startswith(b"BM"):
        return "a BMP image"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "a TIFF image"
    if head[4:8] == b"ftyp":
        return _ISO_BRANDS.get(head[8:12], "a video or other ISO media file")
    if head.startswith(b"PK\x03\x04"):
        return "a ZIP archive (or an office document)"
    if head.lstrip().startswith((b"<svg", b"<?xml")):
        return "an SVG or XML document"
    if b"\x00" not in head:
        try:
            head.decode("utf-8")
            return "text"
        except UnicodeDecodeError as exc:
            if exc.start >= len(head) - 3:  # a character cut at the end of the sample
                return "text"
    return "a file of an unknown kind"


def _taken_at(image: Image.Image) -> datetime | None:
    """When the photo was taken, from its EXIF date and time offset; None without both
    (a camera's clock without its offset is no instant)."""
    try:
        exif = image.getexif()
        detail = exif.get_ifd(0x8769)  # the Exif IFD
        stamp = detail.get(0x9003) or exif.get(0x0132)  # DateTimeOriginal, DateTime
        offset = detail.get(0x9011) or detail.get(0x9010)  # OffsetTimeOriginal, OffsetTime
        if not isinstance(stamp, str) or not isinstance(offset, str):
            return None
        taken = datetime.strptime(f"{stamp.strip()} {offset.strip()}", "%Y:%m:%d %H:%M:%S %z")
    except Exception:  # any EXIF that cannot be read is no date: the photo is still good
        return None
    return taken if datetime(1990, 1, 1, tzinfo=UTC) <= taken <= datetime.now(UTC) else None


def check_size(size: int, limits: Limits, label: str = "the photo") -> None:
    """TooLarge when a photo of ``size`` bytes is over ``limits`` (asked before it is read)."""
    if size > limits.max_bytes:
        raise TooLarge(f"{label} is {size:,} bytes; a photo may be at most "
                       f"{limits.max_bytes / 1024 / 1024:g} MB ({limits.max_bytes:,} bytes)")  # fmt: skip


def prepare(data: bytes, limits: Limits | None = None, *, label: str = "the photo") -> Prepared:
    """``data`` checked as a photo and its public copy made; ``label`` names it in
    messages ("photo 2"). TooLarge past ``limits`` (bytes, or the pixels its header
    declares: checked before decoding), UnsupportedMedia for anything but a JPEG, PNG or
    WebP (saying what it is), InvalidInput for one that is truncated or corrupt."""
    limits = limits or Limits()
    check_size(len(data), limits, label)
    kind = _kind(data)
    if kind is None:
        raise UnsupportedMedia(f"{label} is {_other_kind(data)}, not a JPEG, PNG or WebP image;"
                               " send the photo as one of those")  # fmt: skip
    most = f"at most {limits.max_pixels / 1e6:g} megapixels"
    try:
        # Only the plugin its first bytes name reads it; open reads the header alone.
        image = Image.open(io.BytesIO(data), formats=[kind])
    except Image.DecompressionBombError:  # Pillow's own guard, far above any limit of ours
        ceiling = 2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6
        raise TooLarge(f"{label} declares more than {ceiling:.0f} megapixels in its header, "
                       f"far more than a photo has; {most}") from None  # fmt: skip
    except Exception:
        raise InvalidInput(f"{label} cannot be read as a {kind} image: it is truncated or "
                           "corrupt; send the whole file again") from None  # fmt: skip
    width, height = image.size
    if width * height > limits.max_pixels:
        raise TooLarge(f"{label} is {width:,}×{height:,} pixels ({width * height / 1e6:.0f} "
                       f"megapixels); {most}")  # fmt: skip
    try:
        image.load()
        taken_at = _taken_at(image)
        upright = ImageOps.exif_transpose(image)
    except Exception:  # Pillow's many ways of saying the data ends early or is wrong
        raise InvalidInput(f"{label} cannot be read as a {kind} image: it is truncated or "
                           "corrupt; send the whole file again") from None  # fmt: skip
    public = _public_copy(upright, kind)
    return Prepared(MEDIA_TYPES[kind], upright.width, upright.height, data, public, taken_at)


def _public_copy(image: Image.Image, kind: str) -> bytes:
    """The pixels re-encoded in the same format with no metadata at all; checked."""
    image.info = {}  # comment, XMP, ICC, EXIF: nothing of the original's goes with it
    if kind == "JPEG" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")  # CMYK and the rest: as every browser shows them
    elif kind == "WEBP" and image.mode not in ("RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in image.mode else "RGB")
    out = io.BytesIO()
    image.save(out, format=kind, **PUBLIC_SAVE[kind])
    public = out.getvalue()
    # Never publish what still holds metadata: the copy is read back and looked at.
    check = Image.open(io.BytesIO(public), formats=[kind])
    if len(check.getexif()) or {"exif", "xmp", "XML:com.adobe.xmp", "comment"} & set(check.info):
        raise RuntimeError("the public copy of a photo still holds metadata")
    return public


def store(conn: psycopg.Connection, incident_id: int, photo: Prepared, *,
          event_id: int | None = None) -> str:  # fmt: skip
    """Keep ``photo`` with the incident (and the timeline event that added it; none for a
    photo of the report itself); its new id, a random token."""
    photo_id = secrets.token_urlsafe(ID_BYTES)
    try:
        conn.execute(
            "INSERT INTO incident_photos (id, incident_id, event_id, media_type, width, height,"
            " original, original_sha256, public, public_sha256, taken_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %b, %s, %b, %s, %s)",
            (photo_id, incident_id, event_id, photo.media_type, photo.width, photo.height,
             photo.original, photo.original_sha256, photo.public,
             hashlib.sha256(photo.public).hexdigest(), photo.taken_at),
        )  # fmt: skip
    except psycopg.errors.ForeignKeyViolation:
        raise NotFound(f"no incident {incident_id}") from None
    return photo_id


def check_and_store(conn: psycopg.Connection, incident_id: int, data: bytes, *,
                    event_id: int | None = None, limits: Limits | None = None) -> str:  # fmt: skip
    """``data`` checked (``prepare``) and stored (``store``) with the incident: the new
    photo's id. The errors are ``prepare``'s; nothing is stored when one is raised."""
    return store(conn, incident_id, prepare(data, limits), event_id=event_id)


def report_with_photos(conn: psycopg.Connection, photos: Sequence[Prepared],
                       **report: Any) -> Any:  # fmt: skip
    """``intake.report(conn, **report)`` and its ``photos`` in one transaction: a photo
    that cannot be stored stores no incident. A retry under the same Idempotency-Key
    answers the incident taken (``replayed``) only with the same photos, in the same
    order; with others it is a Conflict, as another report under the key is."""
    from twin.incidents import intake  # intake's views list photos: imported here, late

    if not photos:
        incident = intake.report(conn, **report)
    else:
        with conn.transaction():
            incident = intake.report(conn, **report)
            if not incident.replayed:
                for photo in photos:
                    store(conn, incident.id, photo)
                incident = intake.Incident(incident.id, intake.get(conn, incident.id))
    if incident.replayed:
        check_replayed(conn, incident.id, photos, report.get("idempotency_key"))
    return incident


def check_replayed(conn: psycopg.Connection, incident_id: int, photos: Sequence[Prepared],
                   key: Any) -> None:  # fmt: skip
    """A retry under an Idempotency-Key answers the incident taken only with the same
    photos, in the same order (none: none): Conflict otherwise, as another report under
    the key is."""
    stored = [r[0] for r in conn.execute(
        "SELECT original_sha256 FROM incident_photos WHERE incident_id = %s AND event_id"
        " IS NULL ORDER BY created_at, id", (incident_id,),
    )]  # fmt: skip
    if stored != [p.original_sha256 for p in photos]:
        raise Conflict(
            f"Idempotency-Key {str(key)[:60]!r} was used for a report with other photos "
            f"(incident {incident_id}, {len(stored)} photo(s)); send a new key for a new report"
        )


def add_to_timeline(conn: psycopg.Connection, incident_id: int, photos: Sequence[Prepared], *,
                    actor: str, note: str | None = None) -> list[str]:  # fmt: skip
    """A unit's or dispatcher's ``photos`` (before or after the work) added to the
    incident as one ``photo_added`` step of its timeline, in any status; the incident's
    version moves (its view changed). The new photos' ids; NotFound for an unknown
    incident, InvalidInput for a note that cannot be kept."""
    note = note or ""
    if not isinstance(note, str) or "\x00" in note or len(note) > MAX_NOTE:
        raise InvalidInput(f"note must be text without NUL, at most {MAX_NOTE:,} characters",
                           option="note")  # fmt: skip
    if not photos:
        raise InvalidInput("send at least one photo", option="photo")
    with conn.transaction():
        row = conn.execute(
            "SELECT status FROM incidents WHERE id = %s FOR UPDATE", (incident_id,)
        ).fetchone()
        if row is None:
            raise NotFound(f"no incident {incident_id}")
        event = conn.execute(
            "INSERT INTO incident_events (incident_id, actor, action, from_status, to_status,"
            " note) VALUES (%s, %s, 'photo_added', %s, %s, %s) RETURNING id",
            (incident_id, actor, row[0], row[0], note),
        ).fetchone()
        assert event is not None
        ids = [store(conn, incident_id, photo, event_id=int(event[0])) for photo in photos]
        conn.execute(
            "UPDATE incidents SET version = version + 1, updated_at = now() WHERE id = %s",
            (incident_id,),
        )
    return ids


def listing(conn: psycopg.Connection, incident_id: int, timeline: list[dict[str, Any]], *,
            public: bool) -> list[dict[str, Any]]:  # fmt: skip
    """The incident's photos as its views show them, in the order they came; each entry
    of ``timeline`` (read with its event ``id``) gets the ids of the photos it added
    (``photos``). The public view shows the public copy alone and no EXIF time; staff see
    the original's address, which timeline event added it (null: the report), the time
    it was taken and both sizes."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT id, event_id, media_type, width, height, taken_at, created_at,"
            " octet_length(original) AS original_bytes, octet_length(public) AS public_bytes"
            " FROM incident_photos WHERE incident_id = %s ORDER BY created_at, id",
            (incident_id,),
        ).fetchall()
    by_event: dict[int, list[str]] = {}
    shown = []
    for row in rows:
        if row["event_id"] is not None:
            by_event.setdefault(row["event_id"], []).append(row["id"])
        photo = {"id": row["id"], "url": PUBLIC_PATH.format(id=row["id"]),
                 "media_type": row["media_type"], "width": row["width"],
                 "height": row["height"]}  # fmt: skip
        if not public:
            photo.update(
                original_url=ORIGINAL_PATH.format(id=row["id"]), event=row["event_id"],
                taken_at=row["taken_at"], added_at=row["created_at"],
                bytes={"original": row["original_bytes"], "public": row["public_bytes"]},
            )  # fmt: skip
        shown.append(photo)
    for entry in timeline:
        entry["photos"] = by_event.get(entry["id"], [])
    return shown


def served(conn: psycopg.Connection, photo_id: str, *, original: bool = False) -> Served:
    """The public copy of a photo (or, for staff, the ``original`` as uploaded); NotFound
    for an id no photo has."""
    if not isinstance(photo_id, str) or not 0 < len(photo_id) <= MAX_ID or "\x00" in photo_id:
        raise NotFound("no photo has this id")
    column, digest = ("original", "original_sha256") if original else ("public", "public_sha256")
    row = (
        conn.cursor(binary=True)
        .execute(
            f"SELECT {column}, media_type, {digest} FROM incident_photos WHERE id = %s",  # noqa: S608 (two fixed names)
            (photo_id,),
        )
        .fetchone()
    )
    if row is None:
        raise NotFound("no photo has this id")
    return Served(bytes(row[0]), str(row[1]), str(row[2]))
