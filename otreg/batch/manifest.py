"""The manifest: one row per case, in a CSV or TSV file with a header.

Columns:
  case              a unique id, also the name of the case's output folder (letters, digits,
                    ``.``, ``_``, ``-``; not starting with ``.``)
  source, target    the moving and fixed files (relative to the manifest's folder)
  source_landmarks, target_landmarks   optional paired landmark files: TRE in the summary
  landmark_format   optional, per case: mm or dirlab (default: the pipeline's [landmarks])
  spacing           optional, per case: dirlab voxel size "SX SY SZ" in mm
  section.key       any column with a dot (or ``seed``, ``device``) is a per-case override of
                    the registration config, its cells TOML values (``input.label`` =
                    ``[1, 2]``); an empty cell: none

The separator is a tab for ``.tsv`` / ``.tab`` files, else a comma. Lines starting with ``#``
and blank lines are skipped.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError

REQUIRED = ("case", "source", "target")
OPTIONAL = ("source_landmarks", "target_landmarks", "landmark_format", "spacing")
TOP_LEVEL_SETTINGS = ("seed", "device")


def is_override(column: str) -> bool:
    """Whether a column holds per-case config overrides (``input.points``, ``seed``)."""
    return "." in column or column in TOP_LEVEL_SETTINGS


CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
RESERVED_IDS = {"logs"}


class ManifestError(ConfigError):
    """A manifest that cannot be used: the message names the file, the row and the column."""


@dataclass(frozen=True)
class Case:
    """One row of the manifest, its paths absolute.

    Attributes:
        id: the case id (its output folder's name).
        row: the row's line number in the manifest (1: the header).
        source, target: the moving and fixed files.
        source_landmarks, target_landmarks: paired landmark files, or None.
        landmark_format, spacing: how to read them (None: the pipeline's).
        overrides: per-case ``section.key=value`` overrides, applied after the pipeline's.
    """

    id: str
    row: int
    source: Path
    target: Path
    source_landmarks: Path | None = None
    target_landmarks: Path | None = None
    landmark_format: str | None = None
    spacing: tuple[float, float, float] | None = None
    overrides: tuple[str, ...] = field(default_factory=tuple)

    def input_files(self) -> dict[str, Path]:
        """{column: path} of every file the case reads."""
        files = {"source": self.source, "target": self.target}
        if self.source_landmarks is not None:
            files["source_landmarks"] = self.source_landmarks
        if self.target_landmarks is not None:
            files["target_landmarks"] = self.target_landmarks
        return files


def read_manifest(path: str | Path) -> list[Case]:
    """The cases of a manifest, in file order.

    Raises:
        ManifestError: missing file, missing or unknown column, empty or duplicate case id,
            an empty required cell, a bad landmark format or spacing; the first problem found,
            named by file, row and column.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: no such manifest file")
    delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise ManifestError(f"{path}: cannot read the manifest: {err}") from None
    numbered = [
        (number, line)
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not numbered:
        raise ManifestError(f"{path}: empty manifest (expected a header: case, source, target)")
    rows = list(csv.reader([line for _, line in numbered], delimiter=delimiter))
    header = [name.strip() for name in rows[0]]
    header_line = numbered[0][0]
    missing = [name for name in REQUIRED if name not in header]
    if missing:
        raise ManifestError(
            f"{path}, line {header_line}: missing column(s) {', '.join(missing)} "
            f"(the header has: {', '.join(header) or 'nothing'}; separator "
            f"{'tab' if delimiter == chr(9) else 'comma'})"
        )
    for name in header:
        if name not in REQUIRED + OPTIONAL and not is_override(name):
            raise ManifestError(
                f"{path}, line {header_line}, column {name!r}: unknown column (known: "
                f"{', '.join(REQUIRED + OPTIONAL)}, or section.key / seed / device for a per-case "
                "override)"
            )
    duplicated = {name for name in header if header.count(name) > 1}
    if duplicated:
        raise ManifestError(
            f"{path}, line {header_line}: column(s) {', '.join(sorted(duplicated))} given twice"
        )
    here = path.parent
    cases: list[Case] = []
    seen: dict[str, int] = {}
    for (line, _), cells in zip(numbered[1:], rows[1:]):
        where = f"{path}, line {line}"
        if len(cells) != len(header):
            raise ManifestError(
                f"{where}: {len(cells)} cells, the header has {len(header)} columns"
            )
        values = {name: cell.strip() for name, cell in zip(header, cells)}
        for name in REQUIRED:
            if not values[name]:
                raise ManifestError(f"{where}, column {name!r}: empty")
        case_id = values["case"]
        if not CASE_ID.match(case_id) or case_id in RESERVED_IDS:
            raise ManifestError(
                f"{where}, column 'case': {case_id!r} cannot name a folder (letters, digits, "
                f"'.', '_', '-', not starting with '.'; not {', '.join(sorted(RESERVED_IDS))})"
            )
        if case_id in seen:
            raise ManifestError(
                f"{where}, column 'case': duplicate case id {case_id!r} (first on line "
                f"{seen[case_id]})"
            )
        seen[case_id] = line
        cases.append(_case(values, line, here, where))
    if not cases:
        raise ManifestError(f"{path}: no cases (only a header)")
    return cases


def _case(values: dict[str, str], line: int, here: Path, where: str) -> Case:
    def file(name: str) -> Path | None:
        text = values.get(name, "")
        return (here / text).absolute() if text else None

    source_landmarks, target_landmarks = file("source_landmarks"), file("target_landmarks")
    if (source_landmarks is None) != (target_landmarks is None):
        raise ManifestError(f"{where}: give both source_landmarks and target_landmarks, or neither")
    landmark_format = values.get("landmark_format") or None
    if landmark_format not in (None, "mm", "dirlab"):
        raise ManifestError(
            f"{where}, column 'landmark_format': {landmark_format!r} (expected mm or dirlab)"
        )
    spacing: tuple[float, float, float] | None = None
    if values.get("spacing"):
        try:
            numbers = tuple(float(v) for v in values["spacing"].replace(",", " ").split())
        except ValueError:
            numbers = ()
        if len(numbers) != 3 or min(numbers) <= 0:
            raise ManifestError(
                f"{where}, column 'spacing': {values['spacing']!r} (expected three positive "
                "numbers, mm: SX SY SZ)"
            )
        spacing = (numbers[0], numbers[1], numbers[2])
    overrides = tuple(
        f"{name}={value}" for name, value in values.items() if is_override(name) and value
    )
    return Case(
        id=values["case"],
        row=line,
        source=(here / values["source"]).absolute(),  # required: never empty
        target=(here / values["target"]).absolute(),
        source_landmarks=source_landmarks,
        target_landmarks=target_landmarks,
        landmark_format=landmark_format,
        spacing=spacing,
        overrides=overrides,
    )
