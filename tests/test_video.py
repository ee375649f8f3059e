"""Video I/O: round trip, fitting, and every bad input gives V2VError and leaves no output file."""
import subprocess

import imageio_ffmpeg
import numpy as np
import pytest

from v2v_core.__main__ import main as cli
from v2v_core.errors import V2VError
from v2v_core.video import VideoWriter, fit_frame, probe, read_video, write_video

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


def _ffmpeg(*args):
    subprocess.run([FFMPEG, "-y", "-loglevel", "error", *map(str, args)], check=True)


def test_round_trip_h264(tmp_path):
    from v2v_core.synthetic import make_clip

    clip = make_clip("pan", 6, 256)
    p = write_video(tmp_path / "a.mp4", clip.frames, 20)
    out = subprocess.run([FFMPEG, "-i", str(p)], capture_output=True, text=True).stderr
    assert "h264" in out and "yuv420p" in out
    frames, fps = read_video(p)
    assert len(frames) == len(clip.frames) and fps == 20
    assert np.abs(frames[3].astype(int) - clip.frames[3]).mean() < 4   # lossy (crf 18, 4:2:0) but close


@pytest.mark.parametrize("ext,codec", [("webm", "libvpx-vp9"), ("mov", "libx264"), ("avi", "mjpeg"), ("gif", "gif")])
def test_reads_common_containers(tmp_path, ext, codec):
    p = tmp_path / f"c.{ext}"
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=96x64:rate=10:duration=0.5", "-c:v", codec, p)
    frames, _ = read_video(p, size=64)
    assert len(frames) == 5 and frames[0].shape == (64, 64, 3)


def test_fit_frame_sizes():
    f = np.zeros((300, 451, 3), np.uint8)
    assert fit_frame(f, 256).shape == (256, 256, 3)
    assert fit_frame(f, 256, keep_aspect=True).shape == (256, 384, 3)
    with pytest.raises(V2VError):
        fit_frame(f, 250)


def _bad_inputs(tmp_path):
    txt = tmp_path / "notes.mp4"
    txt.write_text("this is not a video\n" * 50)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    zero = tmp_path / "zero.mp4"
    _ffmpeg("-f", "lavfi", "-i", "color=c=red:s=64x64:d=1", "-frames:v", "0", "-c:v", "libx264", zero)
    good = tmp_path / "good.mp4"
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x64:rate=10:duration=2", "-c:v", "libx264", "-pix_fmt", "yuv420p", good)
    data = good.read_bytes()
    trunc = tmp_path / "truncated.mp4"
    trunc.write_bytes(data[: len(data) // 2])   # moov atom is at the end: nothing decodable remains
    tiny = tmp_path / "tiny.avi"
    _ffmpeg("-f", "lavfi", "-i", "color=c=red:s=8x8:d=0.3", "-c:v", "mjpeg", tiny)
    huge = tmp_path / "huge.avi"
    _ffmpeg("-f", "lavfi", "-i", "color=c=red:s=9000x32:d=0.2", "-c:v", "mjpeg", huge)
    codec = tmp_path / "codec.mp4"
    codec.write_bytes(data.replace(b"avc1", b"zzzz").replace(b"avcC", b"zzzC"))   # unknown codec tag
    return {"not a video": txt, "empty file": empty, "zero frames": zero, "truncated": trunc,
            "too small": tiny, "too large": huge, "unknown codec": codec, "missing": tmp_path / "nope.mp4"}


def test_every_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, capsys):
    for what, path in _bad_inputs(tmp_path).items():
        with pytest.raises(V2VError) as e:
            read_video(path)
        msg = str(e.value)
        assert path.name in msg or "No such" in msg, (what, msg)
        out = tmp_path / f"out-{path.stem}.mp4"
        rc = cli(["translate", str(path), "--prompt", "a photo", "--out", str(out), "--backbone", "toy", "--size", "64"])
        assert rc == 2, what
        assert "error:" in capsys.readouterr().err
        assert not out.exists(), what
        assert not list(tmp_path.glob(".partial-*")), what


def test_failed_write_leaves_nothing(tmp_path, pan_clip):
    target = tmp_path / "x.mp4"
    with pytest.raises(RuntimeError):
        with VideoWriter(target) as w:
            w.write(pan_clip.frames[0])
            raise RuntimeError("model crashed mid-clip")
    assert not target.exists() and not list(tmp_path.iterdir())
    with pytest.raises(V2VError):
        VideoWriter(tmp_path / "x.avi")


def test_probe_reads_shared_clip():
    from conftest import shared_video

    info = probe(shared_video("kite-walk.mp4"))
    assert (info.width, info.height, info.fps) == (900, 900, 10.0)
