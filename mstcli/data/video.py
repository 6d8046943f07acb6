"""Frames from video files, decoded with PyAV (FFmpeg bundled in the wheel, so it works offline).

The reference picks a face box per frame with MTCNN, which needs a pretrained detector that cannot be
downloaded here. mst instead crops a fixed box, :func:`face_box`: a square whose side is half the frame
height, centred horizontally, its top a sixth of the height from the top. In the RAVDESS recordings
(1280x720, one actor seated, centred, in front of a plain backdrop) this box holds the head; unlike MTCNN it
does not follow head movement and keeps some hair, neck and backdrop around the face.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mstcli.errors import UserError


def frame_numbers(count: int, seconds: float, fps: float) -> list[int]:
    """``count`` frame numbers evenly spaced in the first ``seconds``: step = seconds * fps / count, starting half
    a step in, rounded down. For 15 frames over 3.6 s at 30 fps this is the reference's list 3, 10, 17, ..., 103."""
    step = seconds * fps / count
    first = int(step // 2)
    return [int(first + i * step) for i in range(count)]


def face_box(height: int, width: int) -> tuple[int, int, int]:
    """(top, left, side) of the fixed crop described in the module docstring."""
    side = max(1, min(height // 2, width))
    top = min(height // 6, height - side)
    left = (width - side) // 2
    return top, left, side


def crop_resize(frame: np.ndarray, size: int) -> np.ndarray:
    """H x W x 3 uint8 -> 3 x size x size float32 (channels first, bilinear as OpenCV's default)."""
    top, left, side = face_box(*frame.shape[:2])
    patch = torch.from_numpy(np.ascontiguousarray(frame[top : top + side, left : left + side])).permute(2, 0, 1)
    patch = patch.float().unsqueeze(0)
    return F.interpolate(patch, size=(size, size), mode="bilinear", align_corners=False)[0].numpy()


def read_frames(path: Path, count: int, seconds: float, size: int) -> np.ndarray:
    """``count x 3 x size x size`` float32 BGR frames (0-255) of ``path``; frames past the clip's end stay zero."""
    try:
        import av
    except ImportError:
        raise UserError("reading MP4 video needs PyAV: pip install av") from None
    out = np.zeros((count, 3, size, size), dtype=np.float32)
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 30)
            wanted = {n: i for i, n in enumerate(frame_numbers(count, seconds, fps))}
            last = max(wanted)
            for number, frame in enumerate(container.decode(stream)):
                if number in wanted:
                    out[wanted[number]] = crop_resize(frame.to_ndarray(format="bgr24"), size)
                if number >= last:
                    break
    except (av.error.FFmpegError, IndexError) as exc:
        raise UserError(f"{path}: not a readable video ({exc})") from None
    return out
