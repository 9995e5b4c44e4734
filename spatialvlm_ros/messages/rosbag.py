"""Open a rosbag2 (sqlite3 or mcap) with rosbags, find its camera topics, and stream its frames.

No ROS install is needed: messages are deserialised by rosbags from the definitions stored in the
bag (or, for bags without them, from rosbags' own type store). Every failure of the bag itself
(missing, truncated, corrupt, wrong topics) is raised as :class:`~spatialvlm_ros.errors.BagError`
naming the problem. Times are integer nanoseconds: ``stamp_ns`` from message headers, ``log_time_ns``
from the bag. The bag evaluator and the data engine's bag source both read bags through this module.
"""

from __future__ import annotations

import contextlib
import logging
import posixpath
import sqlite3
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import apsw
from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.interfaces import Connection
from rosbags.rosbag2 import ReaderError
from rosbags.typesys import Stores, get_typestore

from spatialvlm_ros.errors import BagError
from spatialvlm_ros.messages.conversions import stamp_to_ns
from spatialvlm_ros.messages.sync import StampPairer

log = logging.getLogger(__name__)

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"

# Preferred names, in order: the project's own (as `spatialvlm demo` records them), then the
# RealSense ROS 2 wrapper's defaults. Raw colour before compressed: lossless and nothing to decode.
IMAGE_TOPICS = ("camera/color/image_raw", "/camera/camera/color/image_raw",
                "/camera/camera/color/image_raw/compressed")
DEPTH_TOPICS = ("camera/aligned_depth_to_color/image_raw", "/camera/camera/aligned_depth_to_color/image_raw")

# What the storage libraries raise on a truncated or corrupt file, while opening or mid-read.
_READ_ERRORS = (AnyReaderError, ReaderError, apsw.Error, sqlite3.Error, OSError, struct.error, EOFError,
                ValueError)


@dataclass(frozen=True)
class CameraTopics:
    """The camera topics of a bag.

    Attributes:
        image: colour topic (sensor_msgs/Image or CompressedImage), as named in the bag.
        compressed: ``image`` carries CompressedImage.
        depth: registered depth topic (sensor_msgs/Image 16UC1 or 32FC1); None for monocular.
        camera_info: sensor_msgs/CameraInfo topic of the colour camera.
    """

    image: str
    compressed: bool
    depth: str | None
    camera_info: str


@dataclass(frozen=True)
class CameraMessages:
    """The deserialised messages of one camera frame (rosbags message objects).

    Attributes:
        image: the colour message.
        depth: the depth message paired with it by header stamp; None for monocular.
        camera_info: the latest CameraInfo before the colour message (the first in the bag before any).
        stamp_ns: header stamp of ``image``.
        log_time_ns: bag (receive) time of ``image``.
    """

    image: Any
    depth: Any | None
    camera_info: Any
    stamp_ns: int
    log_time_ns: int


def _read_failure(path: Path, err: BaseException) -> BagError:
    hint = ""
    if "magic" in str(err).lower():
        hint = " (truncated or not an mcap file; an interrupted recording can be salvaged with `mcap recover`)"
    elif isinstance(err, (apsw.Error, sqlite3.Error)) or "database" in str(err):
        hint = " (corrupt sqlite3 storage)"
    return BagError(f"cannot read bag {path}: {err}{hint}")


@contextlib.contextmanager
def open_bag(path: str | Path) -> Iterator[AnyReader]:
    """Open a rosbag2 folder or a bare ``.mcap`` / ``.db3`` file for reading.

    Raises:
        BagError: the path is missing, has no ``metadata.yaml``, or the bag cannot be read.

    Example:
        >>> with open_bag("/no/such/bag") as reader:
        ...     pass
        Traceback (most recent call last):
        ...
        spatialvlm_ros.errors.BagError: no bag at /no/such/bag
    """
    path = Path(path)
    if not path.exists():
        raise BagError(f"no bag at {path}")
    if path.is_dir() and not (path / "metadata.yaml").exists():
        storage = sorted(p.name for p in path.iterdir() if p.suffix in (".mcap", ".db3"))
        raise BagError(f"{path} has no metadata.yaml; found {storage or 'no storage files'}: pass the .mcap/.db3 "
                       "file itself, or restore the metadata with `ros2 bag reindex`")
    # Used only for bags that store no message definitions (older sqlite3 recordings).
    reader = AnyReader([path], default_typestore=get_typestore(Stores.LATEST))
    try:
        reader.open()
    except _READ_ERRORS as err:
        raise _read_failure(path, err) from err
    try:
        yield reader
    finally:
        reader.close()


def corrupt_chunk(reader: AnyReader) -> tuple[Path, int] | None:
    """(storage file, byte offset) of the first mcap chunk of ``reader`` that cannot be decompressed, if any.

    Only called once reading has failed: it decompresses every chunk (through rosbags' own mcap code, so it
    finds exactly what reading trips over). None for sqlite3 bags or when every chunk reads.
    """
    try:
        from rosbags.rosbag2 import storage_mcap
    except ImportError:   # pragma: no cover - rosbags without mcap support
        return None

    def storages(obj: Any, depth: int = 0) -> Iterator[Any]:
        # AnyReader -> rosbag2 Reader -> its storage (a folder of files) -> one McapReader per file.
        if depth > 3 or obj is None:
            return
        if hasattr(obj, "chunks"):
            yield obj
        for child in [getattr(obj, "storage", None), *getattr(obj, "storages", []), *getattr(obj, "readers", [])]:
            yield from storages(child, depth + 1)

    for storage in storages(reader):
        chunks, bio = getattr(storage, "chunks", None), getattr(storage, "bio", None)
        for chunk in chunks or []:
            try:
                for _ in storage_mcap.msgsrc(chunk, {}, chunk.message_start_time, chunk.message_end_time + 1, bio):
                    pass
            except Exception:   # noqa: BLE001 - whatever the decompressor raises marks the chunk
                return Path(storage.path), int(chunk.chunk_start_offset)
    return None


def read_messages(reader: AnyReader, topics: Iterable[str]) -> Iterator[tuple[Connection, int, bytes]]:
    """The raw messages of ``topics`` in bag order.

    Raises:
        BagError: reading failed mid-file (truncated, a chunk that does not decompress, a checksum): the
            message names the bag, the byte offset of a corrupt mcap chunk when there is one, and how far
            reading got (messages read, last bag time).
    """
    wanted = set(topics)
    connections = [c for c in reader.connections if c.topic in wanted]
    messages = reader.messages(connections=connections)
    count, last_ns = 0, None
    while True:
        try:
            item = next(messages)
        except StopIteration:
            return
        except Exception as err:   # noqa: BLE001 - zstd, lz4, struct, OSError ...: whatever the storage raises
            failure = _read_failure(reader.paths[0], err)
            where = corrupt_chunk(reader)
            place = f" in the chunk at byte offset {where[1]} of {where[0].name}" if where else ""
            after = f"after {count} messages" + (f" (last bag time {last_ns} ns)" if last_ns is not None else "")
            raise BagError(f"{failure}{place}, {after}") from err
        count, last_ns = count + 1, item[1]
        yield item


def deserialize(reader: AnyReader, data: bytes, msgtype: str) -> Any:
    """Deserialise one message; a corrupt message becomes :class:`BagError`."""
    try:
        return reader.deserialize(data, msgtype)
    except _READ_ERRORS as err:
        raise _read_failure(reader.paths[0], err) from err


def topic_types(reader: AnyReader) -> dict[str, str]:
    """Topic -> message type of every topic in the bag."""
    return {c.topic: c.msgtype for c in reader.connections}


def describe_topics(types: Mapping[str, str]) -> str:
    """``topic [Type], ...`` of a bag's :func:`topic_types`, for error messages."""
    return ", ".join(f"{t} [{m.split('/')[-1]}]" for t, m in sorted(types.items())) or "no topics at all"


def lookup_topic(types: Mapping[str, str], name: str) -> str | None:
    """The bag's spelling of ``name``: recorders store topics with or without the leading slash."""
    for candidate in (name, "/" + name.lstrip("/"), name.lstrip("/")):
        if candidate in types:
            return candidate
    return None


def _pick(types: Mapping[str, str], what: str, flag: str, explicit: str | None, preferred: Iterable[str],
          accepted: tuple[str, ...], fallback: list[str]) -> str:
    """Resolve one topic: the explicit name, else the first preferred name present, else the only fallback."""
    if explicit is not None:
        found = lookup_topic(types, explicit)
        if found is None:
            raise BagError(f"{what} topic {explicit!r} ({flag}) is not in the bag; it has: {describe_topics(types)}")
        if types[found] not in accepted:
            raise BagError(f"{what} topic {found!r} carries {types[found]}, expected one of {list(accepted)}")
        return found
    for name in preferred:
        found = lookup_topic(types, name)
        if found is not None and types[found] in accepted:
            return found
    if len(fallback) == 1:
        return fallback[0]
    found_text = f"several candidates {sorted(fallback)}" if fallback else "none"
    raise BagError(f"cannot tell which topic is the {what} ({found_text}); name it with {flag}. "
                   f"The bag has: {describe_topics(types)}")


def resolve_topics(reader: AnyReader, *, image: str | None = None, depth: str | None = None,
                   camera_info: str | None = None) -> CameraTopics:
    """Choose the camera topics: the ones named, else detected (see the module's name lists).

    Args:
        reader: an open bag.
        image: colour topic; a raw topic's name also finds its ``/compressed`` sibling.
        depth: registered depth topic; ``""`` for none (monocular).
        camera_info: CameraInfo topic; default the image's sibling ``camera_info``, else the only one.

    Raises:
        BagError: a named topic is missing or of the wrong type, or detection is ambiguous. The
            message lists the topics the bag does have.
    """
    types = topic_types(reader)
    if image is not None and lookup_topic(types, image) is None:
        sibling = image.rstrip("/") + "/compressed"
        if lookup_topic(types, sibling):
            image = sibling
    colour = (IMAGE, COMPRESSED_IMAGE)
    image_topic = _pick(types, "colour image", "--image-topic", image, IMAGE_TOPICS, colour,
                        [t for t, m in types.items() if m in colour and "depth" not in t])
    depth_topic = None
    if depth != "":
        depth_topic = _pick(types, "depth image", "--depth-topic (or '' for none)", depth, DEPTH_TOPICS, (IMAGE,),
                            [t for t, m in types.items() if m == IMAGE and "depth" in t])
    compressed = types[image_topic] == COMPRESSED_IMAGE
    base = image_topic.removesuffix("/compressed")
    sibling = posixpath.join(posixpath.dirname(base), "camera_info")
    info_topic = _pick(types, "camera_info", "--info-topic", camera_info, [sibling], (CAMERA_INFO,),
                       [t for t, m in types.items() if m == CAMERA_INFO])
    topics = CameraTopics(image=image_topic, compressed=compressed, depth=depth_topic, camera_info=info_topic)
    log.info("topics: colour %s, depth %s, camera_info %s", topics.image, topics.depth or "(none)",
             topics.camera_info)
    return topics


def _first_message(reader: AnyReader, topic: str) -> Any:
    for conn, _log_ns, data in read_messages(reader, [topic]):
        return deserialize(reader, data, conn.msgtype)
    raise BagError(f"topic {topic!r} has no messages")


def camera_messages(reader: AnyReader, topics: CameraTopics, *, slop_ns: int,
                    queue_size: int) -> Iterator[CameraMessages]:
    """Stream the bag's camera frames in bag order: colour paired with depth by header stamp.

    Colour and depth are paired by :class:`StampPairer` (closest stamps within ``slop_ns``), as in
    the node; colour frames without a depth partner are left out.

    Raises:
        BagError: the camera_info topic is empty, or the bag cannot be read.
    """
    info = _first_message(reader, topics.camera_info)
    pairs: list[tuple[Any, Any]] = []
    pairer = StampPairer(lambda image, depth: pairs.append((image, depth)), slop_ns=slop_ns, queue_size=queue_size)
    pending: dict[int, tuple[int, Any]] = {}   # colour stamp -> (log time, camera_info then), until paired
    wanted = [topics.image, topics.camera_info] + ([topics.depth] if topics.depth else [])
    for conn, log_ns, data in read_messages(reader, wanted):
        msg = deserialize(reader, data, conn.msgtype)
        if conn.topic == topics.camera_info:
            info = msg
            continue
        if topics.depth is None:
            yield CameraMessages(msg, None, info, stamp_to_ns(msg.header.stamp), log_ns)
            continue
        if conn.topic == topics.image:
            pending[stamp_to_ns(msg.header.stamp)] = (log_ns, info)
            pairer.add_first(msg)
        else:
            pairer.add_second(msg)
        for image, depth in pairs:
            stamp = stamp_to_ns(image.header.stamp)
            image_log_ns, image_info = pending.get(stamp, (log_ns, info))   # a repeated stamp
            # Colour frames older than this one will never be paired (the pairer dropped them).
            for old in [s for s in pending if s <= stamp]:
                del pending[old]
            yield CameraMessages(image, depth, image_info, stamp, image_log_ns)
        pairs.clear()


def message_count(reader: AnyReader, topic: str) -> int:
    """How many messages ``topic`` has (from the bag's index, without reading them)."""
    return sum(c.msgcount for c in reader.connections if c.topic == topic)
