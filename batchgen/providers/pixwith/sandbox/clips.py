"""The sandbox's videos: a rehearsal clip of the aspect ratio and duration a request asked for.

A rehearsal should look like the real batch in a gallery: a 9:16 8 s request gets a 9:16 8 s
clip. Shipping a clip per (aspect ratio, duration) would be dozens of files; instead one
one-second clip per aspect ratio is shipped (`data/clips/`, ~1.7 KB each, made once with
ffmpeg: a box crossing a plain field, H.264 baseline at 10 fps, one keyframe each second; the
command is in docs/sandbox.md), and a clip of N seconds is that second played N times: its
samples repeated in a new MP4 whose timing tables (stts, stss, stsc, stsz, stco) and durations
say so. Each repeat starts on a keyframe, so every player decodes it; nothing is re-encoded.
"""

from __future__ import annotations

import functools
import struct
from importlib import resources

# The aspect ratios a catalogue model may ask for, by their shipped clip (sora's words too).
ASPECTS = {
    "16:9": "16x9",
    "9:16": "9x16",
    "1:1": "1x1",
    "4:3": "4x3",
    "3:4": "3x4",
    "21:9": "21x9",
    "9:21": "9x21",
    "Landscape": "16x9",
    "Portrait": "9x16",
}
DEFAULT_ASPECT = "16:9"
DEFAULT_SECONDS = 5  # a model with a fixed duration (WAN 2.2 Lite makes 5 s)
MAX_SECONDS = 60

_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"dinf"}


class _Box:
    """One MP4 box: a container's children, or a leaf's payload."""

    def __init__(self, kind: bytes, payload: bytes = b"", children: list[_Box] | None = None):
        self.kind = kind
        self.payload = payload
        self.children = children

    def find(self, *path: bytes) -> _Box:
        box = self
        for kind in path:
            box = next(child for child in box.children or [] if child.kind == kind)
        return box

    def encode(self) -> bytes:
        body = (
            b"".join(child.encode() for child in self.children)
            if self.children is not None
            else self.payload
        )
        return struct.pack(">I4s", 8 + len(body), self.kind) + body


def _parse(data: bytes) -> list[_Box]:
    boxes, at = [], 0
    while at < len(data):
        size, kind = struct.unpack_from(">I4s", data, at)
        body = data[at + 8 : at + size]
        boxes.append(
            _Box(kind, children=_parse(body)) if kind in _CONTAINERS else _Box(kind, payload=body)
        )
        at += size
    return boxes


def _full(version_flags: int, *fields: int, fmt: str) -> bytes:
    return struct.pack(">I" + fmt, version_flags, *fields)


@functools.cache
def _template(aspect: str) -> tuple[list[_Box], list[bytes], int]:
    """The shipped one-second clip of `aspect`: its boxes, its samples (frames), its timescale."""
    name = ASPECTS.get(aspect, ASPECTS[DEFAULT_ASPECT])
    data = (resources.files("batchgen") / "data" / "clips" / f"clip-{name}.mp4").read_bytes()
    boxes = _parse(data)
    moov = next(box for box in boxes if box.kind == b"moov")
    stbl = moov.find(b"trak", b"mdia", b"minf", b"stbl")
    sizes_payload = stbl.find(b"stsz").payload
    _, fixed, count = struct.unpack_from(">III", sizes_payload)
    sizes = [fixed] * count if fixed else list(struct.unpack_from(f">{count}I", sizes_payload, 12))
    # The template is written with every sample in one run of data (ffmpeg's +faststart, one
    # chunk): read them from the first chunk's offset on.
    (offset,) = struct.unpack_from(">I", stbl.find(b"stco").payload, 8)
    samples, at = [], offset
    for size in sizes:
        samples.append(data[at : at + size])
        at += size
    timescale = struct.unpack_from(">I", moov.find(b"trak", b"mdia", b"mdhd").payload, 12)[0]
    return boxes, samples, timescale


def clip(aspect_ratio: object = None, seconds: object = None) -> bytes:
    """A playable MP4 of `aspect_ratio` (16:9 for anything unknown) lasting `seconds` (5 when
    none is asked: a fixed-duration model)."""
    aspect = aspect_ratio if isinstance(aspect_ratio, str) else DEFAULT_ASPECT
    whole = seconds if isinstance(seconds, int) and not isinstance(seconds, bool) else None
    repeats = min(max(1, whole or DEFAULT_SECONDS), MAX_SECONDS)
    boxes, samples, timescale = _template(aspect)
    boxes = _parse(b"".join(box.encode() for box in boxes))  # a copy to change
    ftyp = next(box for box in boxes if box.kind == b"ftyp")
    moov = next(box for box in boxes if box.kind == b"moov")
    count = len(samples) * repeats
    delta = timescale // len(samples)  # the template's frames are evenly spaced, 1 s in all
    media_duration = delta * count

    mvhd = moov.find(b"mvhd")
    movie_scale = struct.unpack_from(">I", mvhd.payload, 12)[0]
    movie_duration = movie_scale * repeats
    mvhd.payload = mvhd.payload[:16] + struct.pack(">I", movie_duration) + mvhd.payload[20:]
    trak = moov.find(b"trak")
    tkhd = trak.find(b"tkhd")
    tkhd.payload = tkhd.payload[:20] + struct.pack(">I", movie_duration) + tkhd.payload[24:]
    trak.children = [child for child in trak.children or [] if child.kind != b"edts"]
    mdhd = trak.find(b"mdia", b"mdhd")
    mdhd.payload = mdhd.payload[:16] + struct.pack(">I", media_duration) + mdhd.payload[20:]
    stbl = trak.find(b"mdia", b"minf", b"stbl")
    sizes = [len(sample) for sample in samples] * repeats
    tables = {
        b"stts": _full(0, 1, count, delta, fmt="III"),
        b"stss": _full(0, repeats, *range(1, count + 1, len(samples)), fmt=f"{1 + repeats}I"),
        b"stsc": _full(0, 1, 1, count, 1, fmt="IIII"),
        b"stsz": _full(0, 0, count, *sizes, fmt=f"II{count}I"),
        b"stco": _full(0, 1, 0, fmt="II"),  # the offset, once the layout is known (below)
    }
    stbl.children = [child for child in stbl.children or [] if child.kind not in tables]
    stbl.children += [_Box(kind, payload=payload) for kind, payload in tables.items()]
    moov.children = [child for child in moov.children or [] if child.kind != b"udta"]
    head = ftyp.encode() + moov.encode()
    data_at = len(head) + 8  # the samples follow the mdat box's header
    stbl.find(b"stco").payload = _full(0, 1, data_at, fmt="II")
    head = ftyp.encode() + moov.encode()
    media = b"".join(samples) * repeats
    return head + struct.pack(">I4s", 8 + len(media), b"mdat") + media
