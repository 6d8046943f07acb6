"""Decoding a folder's rows chunk by chunk in worker processes, in order, with a bounded number in flight.

Decoding PNGs and WAVs and computing spectrograms is CPU work that Python threads cannot share, so chunks go to
a pool of processes. At most ``2 x workers`` chunks are in flight: the parent writes each finished chunk to the
HDF5 file as soon as it and all chunks before it are done, so memory holds a few chunks whatever the folder's
size, and a chunk holds at most ``prepare.chunk_mb`` of rows (sources/folder.py sizes them by the bytes of a
row), so the rows in flight stay under ``2 x workers x chunk_mb`` whatever the image size. The workers start
from a fresh interpreter (forkserver), never as a fork of a parent that may already run torch's thread pools (a
forked OpenMP pool can hang), and compute with one thread each.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mstcli.data.folder.kinds import (
    DecodeError,
    KindSettings,
    array_row,
    decode_image,
    image_row,
    log_mel_rows,
    pixel_row,
    read_text_file,
    window_row,
)


@dataclass(frozen=True)
class Chunk:
    """Consecutive rows of the table (``start`` .. ``start + len``) and how to decode each modality."""

    start: int
    root: str
    values: dict[str, list[str]]  # modality -> paths relative to ``root``, or inline text for a ``_text`` column
    kinds: dict[str, str]  # modality -> image | audio | array | text
    from_files: dict[str, bool]
    settings: KindSettings
    check_only: tuple[str, ...] = ()  # modalities featurized in the parent (a frozen image backbone): only decoded
    # modality -> its stored form where it is not "features" (net_inputs.py): "pixels" images are uint8 rows made
    # here; "waveform"/"extractor" clips are returned as windows for the parent's feature extractor
    forms: dict[str, str] = field(default_factory=dict)
    own_settings: dict[str, KindSettings] = field(default_factory=dict)  # modality -> settings other than settings


@dataclass
class DecodedChunk:
    start: int
    kept: list[int] = field(default_factory=list)  # table rows whose every modality decoded
    rows: dict[str, Any] = field(default_factory=dict)  # modality -> array of the kept rows (texts: list of str)
    problems: list[tuple[int, str, str]] = field(default_factory=list)  # (table row, file, reason)


def _decode_value(chunk: Chunk, modality: str, value: str) -> Any:
    kind, settings = chunk.kinds[modality], chunk.own_settings.get(modality, chunk.settings)
    path = Path(chunk.root) / value
    if kind == "text":
        return read_text_file(path) if chunk.from_files[modality] else value
    if modality in chunk.check_only:
        decode_image(path, 3)
        return path
    if kind == "image" and chunk.forms.get(modality) == "pixels":
        return pixel_row(path, settings.image_size)
    if kind == "image":
        return image_row(path, settings)
    if kind == "audio":
        return window_row(path, settings)
    return array_row(path, settings.array_shapes.get(modality))


def decode_chunk(chunk: Chunk) -> DecodedChunk:
    """Every row of ``chunk`` decoded; a row with any undecodable file is left out and reported."""
    out = DecodedChunk(chunk.start)
    decoded: dict[str, list[Any]] = {m: [] for m in chunk.values}
    count = len(next(iter(chunk.values.values())))
    for i in range(count):
        row: dict[str, Any] = {}
        for modality, values in chunk.values.items():
            try:
                row[modality] = _decode_value(chunk, modality, values[i])
            except DecodeError as exc:
                shown = values[i] if chunk.from_files[modality] else ""
                out.problems.append((chunk.start + i, shown, str(exc)))
                break
        else:
            out.kept.append(chunk.start + i)
            for modality, value in row.items():
                decoded[modality].append(value)
    for modality, values in decoded.items():
        kind = chunk.kinds[modality]
        if kind == "text" or modality in chunk.check_only:
            out.rows[modality] = values
        elif kind == "audio" and chunk.forms.get(modality, "features") == "features":
            out.rows[modality] = (
                log_mel_rows(np.stack(values), chunk.own_settings.get(modality, chunk.settings))
                if values
                else np.empty((0,), np.float32)
            )
        else:
            out.rows[modality] = np.stack(values) if values else np.empty((0,), np.float32)
    return out


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def decode_in_order(chunks: Iterable[Chunk], workers: int) -> Iterator[DecodedChunk]:
    """``decode_chunk`` of every chunk, in order; in this process when ``workers`` <= 1."""
    if workers <= 1:
        for chunk in chunks:
            yield decode_chunk(chunk)
        return
    context = multiprocessing.get_context("forkserver")
    # the server imports torch and the decoders once; every worker forks from it with them loaded
    context.set_forkserver_preload(["torch", "torchaudio", "soundfile", __name__])
    pending: deque[Future[DecodedChunk]] = deque()
    executor = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_one_thread)
    try:
        source = iter(chunks)
        exhausted = False
        while True:
            while not exhausted and len(pending) < 2 * workers:
                chunk = next(source, None)
                if chunk is None:
                    exhausted = True
                else:
                    pending.append(executor.submit(decode_chunk, chunk))
            if not pending:
                return
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
        executor.shutdown(wait=True, cancel_futures=True)
