"""Resident photo reports (随手拍) and a unit's photos on the timeline, through the real app
on a real data base: what is taken (JPEG, PNG, WebP, by content), what is refused and how,
and that the public never sees a photo's metadata while staff keep the original."""

from __future__ import annotations

import io
import json
import struct
import zlib
from collections.abc import Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.app import create_app
from tests.helpers import make_data_dir, settings_for
from twin.settings import PhotoSettings

KEY = {"X-API-Key": "test-key"}
REPORTER = {"name": "李四", "phone": "13800001111"}
GPS = {1: "N", 2: (31.0, 14.0, 30.0), 3: "E", 4: (121.0, 28.0, 10.0)}
MAX_MB = 1  # the tests' limits: small, so a photo over them is small too
MAX_MEGAPIXELS = 4


@pytest.fixture
def staff(fresh_url: str) -> Iterator[TestClient]:
    settings = settings_for(make_data_dir("twin-photos-"), api={"api_keys": {"test-key": "网格员"}})
    photos = PhotoSettings(_env_file=None, max_photo_mb=MAX_MB,  # type: ignore[call-arg]
                           max_photo_megapixels=MAX_MEGAPIXELS, max_photos_per_report=3)  # fmt: skip
    with TestClient(create_app(settings.model_copy(update={"photos": photos}),
                               database_url=fresh_url)) as client:  # fmt: skip
        yield client


def _where(url: str) -> tuple[float, float]:
    """A point on a demo water main: a report there is attached and dispatched."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_LineInterpolatePoint(geom, 0.5) AS p"
            " FROM pipes WHERE network = 'water' ORDER BY id LIMIT 1) x"
        ).fetchone()
    assert row is not None
    return float(row[0]), float(row[1])


def _incidents(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM incidents").fetchone()
    assert row is not None
    return int(row[0])


def _report(url: str, **more: object) -> str:
    lon, lat = _where(url)
    return json.dumps({"category": "SJ0401", "channel": "resident_photo",
                       "location": {"lon": lon, "lat": lat}, "reporter": REPORTER,
                       "description": "井盖冒水", **more}, ensure_ascii=False)  # fmt: skip


def _image(fmt: str, size: tuple[int, int] = (64, 48), exif: Image.Exif | None = None) -> bytes:
    picture = Image.new("RGB", size, (200, 30, 30))
    picture.paste((20, 20, 220), (0, 0, size[0] // 2, size[1] // 4))  # a mark: which way up
    out = io.BytesIO()
    picture.save(out, fmt, **({"exif": exif} if exif is not None else {}))
    return out.getvalue()


def _gps_jpeg() -> bytes:
    """A phone's JPEG: GPS where it was taken, the camera, the time, turned on its side."""
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° to show upright
    exif[0x010F] = "ResidentPhone"
    exif.get_ifd(0x8825).update(GPS)
    exif.get_ifd(0x8769).update({0x9003: "2026:12:01 08:30:00", 0x9011: "+08:00"})
    return _image("JPEG", exif=exif)


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width``×``height`` pixels, and holds none."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _post(client: TestClient, report: str, *photos: tuple[str, bytes, str], **headers: str):
    files = [("photo", photo) for photo in photos]
    return client.post("/incidents", data={"report": report}, files=files or None,
                       headers={**KEY, **headers})  # fmt: skip


def test_a_phone_photo_is_public_without_its_metadata_and_staff_keep_the_original(
    staff: TestClient, fresh_url: str
):
    original = _gps_jpeg()
    sent = _post(staff, _report(fresh_url), ("IMG_0001.jpg", original, "image/jpeg"))
    assert sent.status_code == 201, sent.text
    incident = sent.json()
    [photo] = incident["photos"]
    assert photo["media_type"] == "image/jpeg" and photo["event"] is None  # the report's own
    assert (photo["width"], photo["height"]) == (48, 64)  # upright: the EXIF turn applied
    assert photo["taken_at"].startswith("2026-12-01T00:30:00")  # 08:30 at +08:00
    assert photo["bytes"]["original"] == len(original)

    public = staff.get(photo["url"])  # no key
    assert public.status_code == 200, public.text
    assert public.headers["content-type"] == "image/jpeg"
    assert "max-age" in public.headers["cache-control"] and public.headers["etag"]
    shown = Image.open(io.BytesIO(public.content))
    assert len(shown.getexif()) == 0 and not shown.getexif().get_ifd(0x8825)
    assert "exif" not in shown.info and shown.size == (48, 64)
    assert b"ResidentPhone" not in public.content and b"GPS" not in public.content
    assert shown.getpixel((47, 0))[2] > 150  # the blue mark, top left before, now top right
    again = staff.get(photo["url"], headers={"If-None-Match": public.headers["etag"]})
    assert again.status_code == 304

    assert staff.get(photo["original_url"]).status_code == 401  # the original: staff only
    kept = staff.get(photo["original_url"], headers=KEY)
    assert kept.status_code == 200 and kept.content == original
    assert "no-store" in kept.headers["cache-control"]
    assert Image.open(io.BytesIO(kept.content)).getexif().get_ifd(0x8825)[2] == GPS[2]
    assert staff.get("/photos/not-a-photo").status_code == 404
    assert staff.get(f"/incidents/{incident['id']}", headers=KEY).json()["photos"] == [photo]


def test_tracking_shows_the_public_copies_and_no_ones_personal_data(
    staff: TestClient, fresh_url: str
):
    incident = _post(staff, _report(fresh_url), ("a.jpg", _gps_jpeg(), "image/jpeg")).json()
    tracked = staff.get(f"/track/{incident['tracking_token']}")
    assert tracked.status_code == 200
    [photo] = tracked.json()["photos"]
    assert set(photo) == {"id", "url", "media_type", "width", "height"}
    assert photo["url"] == incident["photos"][0]["url"]
    for private in ("original", "taken_at", "李四", "13800001111", "井盖冒水", "网格员"):
        assert private not in tracked.text
    assert staff.get(photo["url"]).status_code == 200


def test_png_and_webp_are_taken_in_the_order_sent(staff: TestClient, fresh_url: str):
    png, webp = _image("PNG"), _image("WEBP")
    sent = _post(staff, _report(fresh_url), ("a.png", png, "image/png"),
                 ("b.webp", webp, "application/octet-stream"))  # fmt: skip
    assert sent.status_code == 201, sent.text
    shown = sent.json()["photos"]
    assert [p["media_type"] for p in shown] == ["image/png", "image/webp"]
    for photo, fmt in zip(shown, ("PNG", "WEBP"), strict=True):
        served = staff.get(photo["url"])
        assert Image.open(io.BytesIO(served.content)).format == fmt
        assert served.headers["content-type"] == photo["media_type"]


def _gif() -> bytes:
    return _image("GIF")


@pytest.mark.parametrize(
    ("name", "data", "declared", "kind"),
    [
        ("a.gif", _gif(), "image/gif", "a GIF image"),
        ("scan.pdf", b"%PDF-1.7\n1 0 obj <<>> endobj\n", "application/pdf", "a PDF document"),
        ("photo.jpg", "路灯不亮，请修理".encode(), "image/jpeg", "text"),  # a name that lies
    ],
)
def test_what_is_no_jpeg_png_or_webp_is_415_saying_what_it_is_and_stores_nothing(
    staff: TestClient, fresh_url: str, name: str, data: bytes, declared: str, kind: str
):
    before = _incidents(fresh_url)
    sent = _post(staff, _report(fresh_url), ("good.png", _image("PNG"), "image/png"),
                 (name, data, declared))  # fmt: skip
    assert sent.status_code == 415, sent.text
    assert sent.headers["content-type"] == "application/problem+json"
    assert f"photo 2 is {kind}, not a JPEG, PNG or WebP" in sent.json()["detail"]
    assert _incidents(fresh_url) == before  # nor the good photo's report


def test_photos_over_their_bytes_or_pixels_are_413_before_decoding(
    staff: TestClient, fresh_url: str
):
    before = _incidents(fresh_url)
    big = _image("JPEG") + b"\0" * (MAX_MB * 1024 * 1024)  # a JPEG with a tail
    sent = _post(staff, _report(fresh_url), ("big.jpg", big, "image/jpeg"))
    assert sent.status_code == 413, sent.text
    assert f"photo 1 is {len(big):,} bytes; a photo may be at most {MAX_MB} MB" in sent.json()[
        "detail"]  # fmt: skip
    # A header claiming 100,000×100,000 pixels, in a few bytes: refused by the header alone
    # (decoding would have found no pixels and said the file is truncated).
    bomb = _post(
        staff, _report(fresh_url), ("bomb.png", _png_header(100_000, 100_000), "image/png")
    )
    assert bomb.status_code == 413, bomb.text
    assert "megapixels" in bomb.json()["detail"]
    large = _post(staff, _report(fresh_url), ("l.png", _png_header(3000, 2000), "image/png"))
    assert large.status_code == 413, large.text
    assert "3,000×2,000 pixels (6 megapixels); at most 4 megapixels" in large.json()["detail"]
    # A body declaring more than all photos may be is refused before it is read.
    huge = staff.post("/incidents", content=b"--x--", headers={
        **KEY, "Content-Type": "multipart/form-data; boundary=x",
        "Content-Length": str(50 * 1024 * 1024)})  # fmt: skip
    assert huge.status_code == 413 and "the upload is larger than" in huge.json()["detail"]
    # One that declares no length (chunked) is stopped as it passes the bound.
    endless = (b"--x\r\n" if n == 0 else b"\0" * 65536 for n in range(80))  # 5 MB
    chunked = staff.post("/incidents", content=endless, headers={
        **KEY, "Content-Type": "multipart/form-data; boundary=x"})  # fmt: skip
    assert chunked.status_code == 413 and "the upload is larger than" in chunked.json()["detail"]
    urlencoded = staff.post("/incidents", data={"report": _report(fresh_url)}, headers=KEY)
    assert urlencoded.status_code == 400 and "multipart/form-data" in urlencoded.json()["detail"]
    assert _incidents(fresh_url) == before


def test_a_truncated_photo_is_a_clear_400_and_stores_nothing(staff: TestClient, fresh_url: str):
    noise = Image.effect_noise((200, 200), 60).convert("RGB")
    out = io.BytesIO()
    noise.save(out, "JPEG")
    cut = out.getvalue()[: len(out.getvalue()) // 2]
    before = _incidents(fresh_url)
    sent = _post(staff, _report(fresh_url), ("cut.jpg", cut, "image/jpeg"))
    assert sent.status_code == 400, sent.text
    assert "photo 1 cannot be read as a JPEG image: it is truncated or corrupt" in sent.json()[
        "detail"]  # fmt: skip
    assert _incidents(fresh_url) == before


def test_the_form_is_checked_and_a_nul_in_the_report_is_a_clean_400(
    staff: TestClient, fresh_url: str
):
    photo = ("a.png", _image("PNG"), "image/png")
    before = _incidents(fresh_url)
    raw_nul = _post(staff, _report(fresh_url).replace("井盖冒水", "井盖\x00冒水"), photo)
    assert raw_nul.status_code == 400, raw_nul.text
    assert "the form part report is not JSON" in raw_nul.json()["detail"]
    escaped = _post(staff, _report(fresh_url, description="井盖\x00冒水"), photo)  # as \u0000
    assert escaped.status_code == 400 and "NUL" in escaped.json()["detail"]
    too_many = _post(staff, _report(fresh_url), *[photo] * 4)
    assert too_many.status_code == 400 and "at most 3 photos" in too_many.json()["detail"]
    no_report = staff.post("/incidents", files=[("photo", photo)], headers=KEY)
    assert no_report.status_code == 400 and "part report" in no_report.json()["detail"]
    unknown = staff.post("/incidents", data={"report": _report(fresh_url), "extra": "x"},
                         files=[("photo", photo)], headers=KEY)  # fmt: skip
    assert unknown.status_code == 400 and "unknown form part 'extra'" in unknown.json()["detail"]
    text_photo = staff.post(
        "/incidents",
        files=[("report", (None, _report(fresh_url))), ("photo", (None, "x"))],
        headers=KEY,
    )  # a form whose photo part is a text field
    assert text_photo.status_code == 400, text_photo.text
    assert "holds text, not a file" in text_photo.json()["detail"]
    assert _incidents(fresh_url) == before


def test_a_retry_under_its_key_answers_the_same_incident_only_with_the_same_photos(
    staff: TestClient, fresh_url: str
):
    report, photo = _report(fresh_url), ("a.jpg", _gps_jpeg(), "image/jpeg")
    refused = _post(staff, report, ("a.gif", _gif(), "image/gif"), **{"Idempotency-Key": "p-1"})
    assert refused.status_code == 415  # the key is not used up by a refused report
    first = _post(staff, report, photo, **{"Idempotency-Key": "p-1"})
    assert first.status_code == 201, first.text
    again = _post(staff, report, photo, **{"Idempotency-Key": "p-1"})
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"] and len(again.json()["photos"]) == 1
    other = _post(staff, report, ("b.png", _image("PNG"), "image/png"),
                  **{"Idempotency-Key": "p-1"})  # fmt: skip
    assert other.status_code == 409 and "other photos" in other.json()["detail"]
    bare = staff.post("/incidents", content=report.encode(),
                      headers={**KEY, "Idempotency-Key": "p-1",
                               "Content-Type": "application/json"})  # fmt: skip
    assert bare.status_code == 409  # the same report without its photo is another report


def test_a_unit_adds_its_after_photo_to_the_timeline(staff: TestClient, fresh_url: str):
    incident = staff.post("/incidents", content=_report(fresh_url).encode(),
                          headers={**KEY, "Content-Type": "application/json"}).json()  # fmt: skip
    assert incident["photos"] == []
    path = f"/incidents/{incident['id']}/photos"
    after = ("after.webp", _image("WEBP"), "image/webp")
    assert staff.post(path, files=[("photo", after)]).status_code == 401
    added = staff.post(path, data={"note": "修复完成"}, files=[("photo", after)], headers=KEY)
    assert added.status_code == 201, added.text
    view = added.json()
    step = view["timeline"][-1]
    assert step["action"] == "photo_added" and step["note"] == "修复完成"
    assert step["actor"] == "网格员" and step["from_status"] == step["to_status"]
    [photo] = view["photos"]
    assert step["photos"] == [photo["id"]] and photo["event"] == step["id"]
    assert view["version"] == incident["version"] + 1
    tracked = staff.get(f"/track/{incident['tracking_token']}").json()
    assert tracked["timeline"][-1]["photos"] == [photo["id"]]
    assert "id" not in tracked["timeline"][-1] and tracked["photos"][0]["id"] == photo["id"]
    gif = staff.post(path, files=[("photo", ("a.gif", _gif(), "image/gif"))], headers=KEY)
    assert gif.status_code == 415
    missing = staff.post("/incidents/999999/photos", files=[("photo", after)], headers=KEY)
    assert missing.status_code == 404
    assert len(staff.get(f"/incidents/{incident['id']}", headers=KEY).json()["photos"]) == 1
