"""Video I/O: read any common container (mp4, webm, mov, avi, gif, mkv) into RGB uint8 frames, fit
them to a size the UNet accepts, and write browser-playable H.264 (yuv420p) mp4.

Reading and writing go through imageio's ffmpeg plugin, whose wheel bundles an ffmpeg binary (no
system ffmpeg needed). Every failure a user can cause (missing file, not a video, no frames, cut-off
file, absurd size, undecodable codec) raises V2VError with a message that says what to do, and a
failed write leaves nothing at the output path.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from .errors import V2VError

MIN_SIDE, MAX_SIDE = 16, 8192          # source frames outside this are refused before decoding
SIZE_MULTIPLE = 64                     # the UNet needs latents divisible by 8 (pixels by 64 with f=8)


@dataclass
class VideoInfo:
    path: str
    fps: float
    width: int
    height: int
    frames: int | None   # from the container (ffmpeg: duration x fps); None when it does not say


def _reader(path: str):
    import imageio.v2 as imageio

    p = Path(path)
    if not p.exists():
        raise V2VError(f"No such video file: {path}. Check the path.")
    if p.is_dir():
        raise V2VError(f"{Path(path).name} is a folder, not a video file.")
    if p.stat().st_size == 0:
        raise V2VError(f"{Path(path).name} is empty (0 bytes). Re-export or re-download the clip.")
    try:
        if p.suffix.lower() == ".gif":  # imageio's ffmpeg plugin refuses .gif; Pillow reads it
            return imageio.get_reader(str(p), format="GIF")
        return imageio.get_reader(str(p), format="FFMPEG")
    except Exception as e:  # imageio/ffmpeg raise assorted types for unreadable input
        raise V2VError(
            f"Could not read {p.name} as a video ({_first_line(e)}). It may not be a video, be cut off, "
            "or use a codec ffmpeg cannot decode: convert it to H.264 mp4 and try again.") from None


def _first_line(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return (lines[-1] if lines else type(e).__name__)[:200]


def probe(path: str | os.PathLike) -> VideoInfo:
    """Container facts without decoding the frames; refuses absurd dimensions."""
    r = _reader(str(path))
    try:
        meta = r.get_meta_data()
    finally:
        r.close()
    size = meta.get("size")
    if size is None:  # GIF: no container size; read the first frame's
        r = _reader(str(path))
        try:
            first = r.get_data(0)
            size = (first.shape[1], first.shape[0])
        except Exception:
            size = (0, 0)
        finally:
            r.close()
        if meta.get("duration"):
            meta["fps"] = 1000.0 / float(meta["duration"])
    w, h = int(size[0]), int(size[1])
    if not (MIN_SIDE <= w <= MAX_SIDE and MIN_SIDE <= h <= MAX_SIDE):
        raise V2VError(f"{Path(path).name} is {w}x{h} pixels; frames must be {MIN_SIDE} to {MAX_SIDE} pixels a side. "
                       "Resize the clip first.")
    n = meta.get("nframes")
    n = int(n) if isinstance(n, (int, float)) and np.isfinite(n) else None
    fps = float(meta.get("fps") or 0.0) or 25.0
    if n is None and Path(path).suffix.lower() != ".gif" and meta.get("duration") and meta.get("fps"):
        n = max(1, int(round(float(meta["duration"]) * fps)))
    return VideoInfo(str(path), fps, w, h, n)


def fitted_size(width: int, height: int, size: int, keep_aspect: bool = False) -> tuple[int, int]:
    """(width, height) that fit_frame gives a width x height frame."""
    k = size / min(height, width)
    nw, nh = max(size, round(width * k)), max(size, round(height * k))
    return (size, size) if not keep_aspect else (nw // SIZE_MULTIPLE * SIZE_MULTIPLE, nh // SIZE_MULTIPLE * SIZE_MULTIPLE)


# The largest frame size the studio accepts (UI and command lines alike); a bigger GPU can raise it.
MAX_SIZE = int(os.environ.get("V2V_MAX_SIZE", "512"))


def check_size(size) -> int:
    """`size` as an int when it is a frame size the studio takes (a multiple of SIZE_MULTIPLE from SIZE_MULTIPLE to
    MAX_SIZE), else a V2VError that says both rules and where the limit comes from."""
    try:
        n = int(size)
    except (TypeError, ValueError):
        raise V2VError(f"Size '{size}' is not a whole number of pixels; use e.g. 256 or 512.") from None
    if n % SIZE_MULTIPLE or not SIZE_MULTIPLE <= n <= MAX_SIZE:
        raise V2VError(f"Size {n} px is not allowed: give a multiple of {SIZE_MULTIPLE} from {SIZE_MULTIPLE} to {MAX_SIZE} "
                       f"(the limit is V2V_MAX_SIZE={MAX_SIZE}; set it higher for a bigger GPU).")
    return n


def fit_frame(frame: np.ndarray, size: int, keep_aspect: bool = False) -> np.ndarray:
    """Resize the short side to `size` and centre-crop: to size x size (default), or, with keep_aspect,
    to the largest multiple of 64 on the long side. `size` must be a multiple of 64."""
    if size % SIZE_MULTIPLE:
        raise V2VError(f"Size {size} is not a multiple of {SIZE_MULTIPLE}; use e.g. 256 or 512.")
    h, w = frame.shape[:2]
    k = size / min(h, w)
    nw, nh = max(size, round(w * k)), max(size, round(h * k))
    img = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_CUBIC)
    tw, th = fitted_size(w, h, size, keep_aspect)
    y, x = (nh - th) // 2, (nw - tw) // 2
    return np.ascontiguousarray(img[y:y + th, x:x + tw])


def iter_frames(path: str | os.PathLike, max_frames: int | None = None, size: int | None = None,
                keep_aspect: bool = False, info: VideoInfo | None = None) -> Iterator[np.ndarray]:
    """Yield RGB uint8 frames (H, W, 3), optionally fitted to `size`; stops after max_frames.
    Pass the caller's `info` from probe() to skip probing the file a second time."""
    if info is None:
        probe(path)
    r = _reader(str(path))
    frames = r.iter_data()
    n = 0
    try:
        while max_frames is None or n < max_frames:
            try:
                frame = next(frames)
            except (IndexError, StopIteration):
                break
            except Exception as e:
                if n == 0:
                    raise V2VError(f"Could not decode {Path(path).name} ({_first_line(e)}). The file may be cut off "
                                   "or use an unsupported codec: convert it to H.264 mp4.") from None
                break  # a cut-off tail: keep the frames that decoded
            frame = np.asarray(frame)[..., :3]
            yield fit_frame(frame, size, keep_aspect) if size else np.ascontiguousarray(frame)
            n += 1
    finally:
        r.close()
    if n == 0:
        raise V2VError(f"{Path(path).name} contains no decodable frames. Re-export the clip and try again.")


def read_video(path: str | os.PathLike, max_frames: int | None = None, size: int | None = None,
               keep_aspect: bool = False) -> tuple[list[np.ndarray], float]:
    """All frames (as a list) and the container's fps."""
    info = probe(path)
    return list(iter_frames(path, max_frames, size, keep_aspect, info)), info.fps


class VideoWriter:
    """Browser-playable H.264 yuv420p mp4, written to a temporary file and moved into place on close.

    Use as a context manager; an exception inside the block removes the partial file.
    """

    def __init__(self, path: str | os.PathLike, fps: float = 20.0):
        self.path = Path(path)
        if self.path.suffix.lower() != ".mp4":
            raise V2VError(f"Output {self.path.name} must end in .mp4 (H.264 is written).")
        if not self.path.parent.exists():
            raise V2VError(f"Output folder {self.path.parent} does not exist.")
        fd, tmp = tempfile.mkstemp(suffix=".mp4", prefix=".partial-", dir=self.path.parent)
        os.close(fd)
        self._tmp = Path(tmp)
        self.fps = float(fps)
        self._w = None
        self.frames = 0

    def write(self, frame: np.ndarray):
        import imageio.v2 as imageio

        frame = np.asarray(frame)
        if frame.dtype != np.uint8:
            frame = np.clip(frame, 0, 255).astype(np.uint8)
        h, w = frame.shape[:2]
        frame = frame[: h - h % 2, : w - w % 2]  # yuv420p needs even sides
        if self._w is None:
            self._w = imageio.get_writer(str(self._tmp), format="FFMPEG", fps=self.fps, codec="libx264",
                                         pixelformat="yuv420p", macro_block_size=1, quality=None,
                                         ffmpeg_params=["-crf", "18", "-preset", "veryfast"], ffmpeg_log_level="error")
        self._w.append_data(frame)
        self.frames += 1

    def close(self):
        if self._w is None:
            self.abort()
            raise V2VError("No frames were written; nothing to save.")
        self._w.close()
        self._w = None
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self._tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file normal permissions
        os.replace(self._tmp, self.path)

    def abort(self):
        if self._w is not None:
            try:
                self._w.close()
            except Exception:
                pass
            self._w = None
        self._tmp.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False


def write_video(path: str | os.PathLike, frames, fps: float = 20.0) -> Path:
    with VideoWriter(path, fps) as w:
        for f in frames:
            w.write(f)
    return Path(path)
