"""The metadata table of a user's folder of paired files, read and checked before anything is decoded.

The layout follows the Hugging Face ImageFolder / AudioFolder convention, widened to several modalities::

    my_pairs/metadata.csv           (or metadata.jsonl, metadata.parquet) one row per paired sample
    my_pairs/pics/0001.png ...      paths relative to the folder of the metadata file

or one metadata file per split folder (``train/``, ``validation/``, ``test/``, or another of the split names the
Hugging Face folder builders know: ``training``, ``val``, ``valid``, ``dev``, ``testing``, ``eval``,
``evaluation``). A column ``<m>_file_name`` holds files of modality ``m`` (its kind comes from the files' suffix), a
column ``<m>_text`` inline text; ``label`` is a class name or an integer and ``split`` (optional) one of those split
names. ``prepare.modalities`` chooses which modalities are read; the columns of the others are ignored.

Everything that can be known without decoding a file is checked here, for every row, so that a user hears about
all the broken rows of a large folder at once instead of one per (long) run: a missing or empty value, a path
that leaves the folder, a missing file, a suffix of another kind, an unknown split. Each problem names the
metadata file and its line.
"""

from __future__ import annotations

import csv
import json
import os
import re
import sys
import unicodedata
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mstcli.data.clips import AUDIO_SUFFIXES, missing_decoder
from mstcli.errors import UserError

METADATA_NAMES = ("metadata.csv", "metadata.jsonl", "metadata.parquet")
SPLIT_NAMES = ("train", "validation", "test")
#: the split names of the Hugging Face folder builders, for split folders and the split column alike
SPLIT_ALIASES = {
    **dict.fromkeys(("train", "training"), "train"),
    **dict.fromkeys(("validation", "valid", "val", "dev"), "validation"),
    **dict.fromkeys(("test", "testing", "eval", "evaluation"), "test"),
}
PARQUET_READER = "pyarrow (pip install pyarrow)"
PARQUET_BATCH = 65536  # rows of a metadata.parquet read at a time
FILE_SUFFIX, TEXT_SUFFIX = "_file_name", "_text"
LABEL_COLUMN, SPLIT_COLUMN = "label", "split"

#: the kind of a modality's files, by suffix; a ``_text`` column is of kind "text" too
KIND_OF_SUFFIX = {
    **dict.fromkeys((".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif"), "image"),
    **dict.fromkeys(AUDIO_SUFFIXES, "audio"),
    ".npy": "array",
    ".txt": "text",
}


@dataclass(frozen=True)
class Modality:
    """One modality of the folder: its name (the column prefix), its kind and whether its rows are files."""

    name: str
    kind: str  # image | audio | array | text
    column: str
    from_files: bool  # False: inline text in a ``_text`` column


@dataclass(frozen=True)
class Place:
    """Where a row is written: the metadata file and its line, as the user sees them in an editor."""

    table: str  # the metadata file, relative to the folder (e.g. "metadata.csv", "train/metadata.jsonl")
    line: int  # the line of a CSV or JSONL file; the row (from 1) of a Parquet file

    @property
    def position(self) -> str:
        return f"{'row' if self.table.endswith('.parquet') else 'line'} {self.line}"

    def __str__(self) -> str:
        return f"{self.table} {self.position}"


@dataclass(frozen=True)
class Problem:
    """A row that cannot become a sample, with the file concerned (or "") and the reason."""

    place: Place
    file: str
    reason: str

    def message(self) -> str:
        return f"{self.place}" + (f" ({self.file})" if self.file else "") + f": {self.reason}"


@dataclass
class FolderTable:
    """The rows of the folder that passed every check, column by column, kept compact so that a folder of
    millions of rows costs little memory: file values are paths relative to the folder, labels and splits are
    shared string objects, places are two integer arrays."""

    root: Path
    modalities: list[Modality]
    tables: list[str] = field(default_factory=list)  # the metadata files, relative to the folder
    table_ids: array = field(default_factory=lambda: array("H"))
    lines: array = field(default_factory=lambda: array("I"))
    labels: list[str] = field(default_factory=list)
    splits: list[str] = field(default_factory=list)  # "" everywhere when the folder gives no split
    values: dict[str, list[str]] = field(default_factory=dict)  # modality -> path in the folder, or inline text
    problems: list[Problem] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # modality columns left out by prepare.modalities

    def __len__(self) -> int:
        return len(self.labels)

    def place(self, row: int) -> Place:
        return Place(self.tables[self.table_ids[row]], self.lines[row])

    def path(self, modality: str, row: int) -> Path:
        return self.root / self.values[modality][row]


def _table_names() -> str:
    return ", ".join(METADATA_NAMES[:-1]) + f" or {METADATA_NAMES[-1]}"


def find_tables(root: Path) -> list[tuple[Path, str]]:
    """The metadata files of ``root`` and the split each one gives to its rows ("" for the root's own)."""
    if not root.is_dir():
        raise UserError(f"prepare.source {root} is not a folder (a folder with a {_table_names()})")
    own = [root / name for name in METADATA_NAMES if (root / name).is_file()]
    split_tables = []
    for split_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        tables = [split_dir / name for name in METADATA_NAMES if (split_dir / name).is_file()]
        if not tables:
            continue
        if split_dir.name.lower() not in SPLIT_ALIASES:
            raise UserError(
                f"{split_dir}: a metadata file in a folder named '{split_dir.name}'; split folders are named "
                f"{', '.join(SPLIT_ALIASES)}"
            )
        split_tables.append(tables)
    for tables in ([own] if own else []) + split_tables:
        if len(tables) > 1:
            raise UserError(f"{tables[0].parent}: {' and '.join(t.name for t in tables)}; keep one")
    if own and split_tables:
        raise UserError(
            f"{root}: a metadata file at the top and in split folders ({split_tables[0][0].parent.name}/);"
            " use one layout"
        )
    if own:
        return [(own[0], "")]
    if split_tables:
        return [(tables[0], SPLIT_ALIASES[tables[0].parent.name.lower()]) for tables in split_tables]
    raise UserError(
        f"{root}: no {_table_names()} (nor in split folders such as train/, validation/, test/); "
        "see `mst example-folder` for the layout"
    )


def _parquet_file(path: Path) -> Any:
    """The pyarrow ParquetFile of a metadata.parquet; a one-line UserError naming the package where none reads it."""
    try:
        import pyarrow.parquet as parquet
    except ImportError:
        raise UserError(f"{path}: reading a metadata.parquet needs {PARQUET_READER}, which is not installed; "
                        "or write the table as metadata.csv or metadata.jsonl") from None  # fmt: skip
    try:
        return parquet.ParquetFile(str(path))
    except Exception as exc:  # pyarrow.ArrowInvalid and its kin: not a Parquet file, or a damaged one
        raise UserError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0][:120]})") from None


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(line, row) of a metadata file (the row number, from 1, of a Parquet file); a row that is not a mapping
    comes as the reason it is not."""
    if path.suffix == ".parquet":
        number = 0
        for batch in _parquet_file(path).iter_batches(batch_size=PARQUET_BATCH):
            for row in batch.to_pylist():
                number += 1
                yield number, row
        return
    if path.suffix == ".csv":
        csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            for row in reader:
                if None in row:
                    yield reader.line_num, f"{len(row[None]) + len(reader.fieldnames or [])} values, the header has " \
                        f"{len(reader.fieldnames or [])} columns"
                    continue
                yield reader.line_num, row
        return
    with open(path, encoding="utf-8-sig") as f:
        for line, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                yield line, f"not valid JSON ({exc.msg})"
                continue
            yield line, row if isinstance(row, dict) else "not a JSON object"


def _columns(path: Path) -> list[str]:
    """The column names of a metadata file: the CSV header, the Parquet schema, or the keys of the JSONL rows
    (first seen first)."""
    try:
        if path.suffix == ".parquet":
            return list(_parquet_file(path).schema_arrow.names)
        if path.suffix == ".csv":
            with open(path, newline="", encoding="utf-8-sig") as f:
                return list(next(csv.reader(f), []))
        names: dict[str, None] = {}
        for _, row in _records(path):
            if isinstance(row, dict):
                names.update(dict.fromkeys(row))
        return list(names)
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a UTF-8 text file") from None


def modality_columns(columns: list[str], path: Path) -> dict[str, Modality]:
    """Every modality named by a ``_file_name`` or ``_text`` column, in column order (kinds filled in later)."""
    found: dict[str, Modality] = {}
    for column in columns:
        for suffix, from_files in ((FILE_SUFFIX, True), (TEXT_SUFFIX, False)):
            if column.endswith(suffix) and len(column) > len(suffix):
                name = column[: -len(suffix)]
                if name in found:
                    raise UserError(f"{path}: modality '{name}' has two columns ({found[name].column}, {column})")
                found[name] = Modality(name, "" if from_files else "text", column, from_files)
    return found


def modalities_of(columns: list[str], path: Path, chosen: list[str] | tuple[str, ...] = ()) -> list[Modality]:
    """The modalities a metadata file gives, or those of them in ``chosen`` (prepare.modalities) in that order."""
    found = modality_columns(columns, path)
    if LABEL_COLUMN not in columns:
        raise UserError(f"{path}: no '{LABEL_COLUMN}' column (columns: {', '.join(columns) or 'none'})")
    if chosen:
        unknown = [name for name in chosen if name not in found]
        if unknown:
            have = ", ".join(found) or "none"
            raise UserError(
                f"prepare.modalities names {', '.join(unknown)}, which {path} has no <modality>_file_name or "
                f"<modality>_text column for (its modalities: {have})"
            )
        found = {name: found[name] for name in chosen}
    if len(found) < 2:
        hint = " ('file_name' must name its modality, e.g. image_file_name)" if "file_name" in columns else ""
        have = ", ".join(m.column for m in found.values()) or "none"
        what = "prepare.modalities must name" if chosen else "needs columns <modality>_file_name or <modality>_text for"
        raise UserError(f"{path}: {what} at least two modalities, found {len(found)} ({have}){hint}")
    return list(found.values())


def read_table(root: Path, chosen: list[str] | tuple[str, ...] = ()) -> FolderTable:
    """Every row of the folder's metadata, checked; rows with a problem are in ``problems``, not in the table.
    ``chosen`` (prepare.modalities) picks the modalities; empty: every one the first metadata file names."""
    root = root.resolve()
    tables = find_tables(root)
    first = tables[0][0]
    modalities = modalities_of(_columns(first), first, chosen)
    names = [m.name for m in modalities]
    ignored: dict[str, None] = {}
    for path, _ in tables:
        columns = _columns(path)
        other = modality_columns(columns, path)
        if path != first:
            modalities_of(columns, path, names)  # every table has the label and the modalities read
            if not chosen and sorted(other) != sorted(names):
                raise UserError(
                    f"{path}: modality columns {', '.join(m.column for m in other.values())} differ from "
                    f"{first.relative_to(root)}'s ({', '.join(m.column for m in modalities)}); prepare.modalities "
                    "chooses the modalities to read"
                )
        ignored.update(dict.fromkeys(m.column for name, m in other.items() if name not in names))
    table = FolderTable(root, modalities, values={m.name: [] for m in modalities}, ignored=list(ignored))
    kinds: dict[str, str] = {m.name: m.kind for m in modalities}
    shared: dict[str, str] = {}  # one object per distinct label or split string
    for table_id, (path, folder_split) in enumerate(tables):
        name = str(path.relative_to(root))
        table.tables.append(name)
        try:
            for line, row in _records(path):
                place = Place(name, line)
                if isinstance(row, str):
                    table.problems.append(Problem(place, "", row))
                    continue
                if _add_row(table, kinds, place, path.parent, row, folder_split, shared):
                    table.table_ids.append(table_id)
                    table.lines.append(line)
        except UnicodeDecodeError:
            raise UserError(f"{path}: not a UTF-8 text file") from None
    table.modalities = [
        Modality(m.name, kinds[m.name] or "image", m.column, m.from_files) for m in table.modalities
    ]
    return table


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _add_row(
    table: FolderTable,
    kinds: dict[str, str],
    place: Place,
    base: Path,
    row: dict[str, Any],
    folder_split: str,
    shared: dict[str, str],
) -> bool:
    """Add ``row`` to the table, or its problem to ``table.problems``; True when added."""
    label = _text(row.get(LABEL_COLUMN))
    if not label:
        table.problems.append(Problem(place, "", "empty label"))
        return False
    split = folder_split
    if not split and _text(row.get(SPLIT_COLUMN)):
        given = _text(row.get(SPLIT_COLUMN))
        split = SPLIT_ALIASES.get(given.lower(), "")
        if not split:
            known = ", ".join(SPLIT_ALIASES)
            table.problems.append(Problem(place, "", f"unknown split '{given}' (use one of {known})"))
            return False
    values: dict[str, str] = {}
    for modality in table.modalities:
        value = row.get(modality.column)
        raw = "" if value is None else str(value)
        if not raw.strip():
            hint = "" if modality.column in row else " (prepare.modalities chooses the modalities read)"
            table.problems.append(Problem(place, "", f"no {modality.column}{hint}"))
            return False
        if not modality.from_files:
            values[modality.name] = raw
            continue
        checked = _checked_file(str(table.root), str(base), raw.strip(), modality, kinds)
        if isinstance(checked, Problem):  # without its place yet
            table.problems.append(Problem(place, checked.file, checked.reason))
            return False
        values[modality.name] = checked
    table.labels.append(shared.setdefault(label, label))
    table.splits.append(shared.setdefault(split, split))
    for name, value in values.items():
        table.values[name].append(value)
    return True


_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:/")


def _existing_form(root: str, relative: str) -> str | None:
    """``relative`` (a path in the folder ``root``) as it exists on disk: as written, or in the other Unicode
    normal form (macOS writes names decomposed, NFD, where a table typed elsewhere has them composed, NFC, and the
    other way round); None if neither exists. Only a path missing as written costs the extra look-ups."""
    if os.path.isfile(os.path.join(root, relative)):
        return relative
    for form in ("NFC", "NFD"):
        other = unicodedata.normalize(form, relative)
        if other != relative and os.path.isfile(os.path.join(root, other)):
            return other
    return None


def _checked_file(root: str, base: str, given: str, modality: Modality, kinds: dict[str, str]) -> str | Problem:
    """The file's path relative to the folder, or the problem with it. Paths are checked by their text (no
    system call per path component), so a table of a million rows is read in seconds. A table written on Windows
    may separate folders by backslashes: they are read as slashes."""
    nowhere = Place("", 0)
    written = given.replace("\\", "/")
    if os.path.isabs(written) or _WINDOWS_DRIVE.match(written):
        return Problem(nowhere, given, "an absolute path; paths are relative to the metadata file's folder")
    full = os.path.normpath(os.path.join(base, written))
    if not (full + os.sep).startswith(root + os.sep):
        return Problem(nowhere, given, f"the path leaves the folder {root}")
    suffix = os.path.splitext(full)[1]
    kind = KIND_OF_SUFFIX.get(suffix.lower())
    if kind is None:
        return Problem(nowhere, given, f"unknown file type '{suffix}' (known: {', '.join(KIND_OF_SUFFIX)})")
    if kind == "audio":
        missing = missing_decoder(suffix)
        if missing:
            return Problem(nowhere, given, missing)
    expected = kinds[modality.name]
    if not expected:
        kinds[modality.name] = kind
    elif kind != expected:
        return Problem(
            nowhere, given, f"a file of kind {kind} in {modality.column}, whose files are of kind {expected}"
        )
    found = _existing_form(root, full[len(root) + 1 :])
    if found is None:
        return Problem(nowhere, given, "missing file")
    return found
