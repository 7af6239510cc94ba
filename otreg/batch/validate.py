"""validate(): every problem of a pipeline, found before anything runs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, OtregError
from .manifest import Case, read_manifest
from .pipeline import Pipeline, load_pipeline


@dataclass(frozen=True)
class Problem:
    case: str | None  # None: the pipeline as a whole
    message: str

    def __str__(self) -> str:
        return f"{self.case}: {self.message}" if self.case else self.message


def case_overrides(pipeline: Pipeline, case: Case) -> list[str]:
    """The overrides a case runs with: the pipeline's, then the case's own."""
    return [*pipeline.overrides, *case.overrides]


def check_case(pipeline: Pipeline, case: Case) -> list[Problem]:
    """The problems of one case: unreadable inputs, a bad config override."""
    from ..config import load_config

    problems = []
    for column, path in case.input_files().items():
        if not path.exists():
            problems.append(Problem(case.id, f"{column} {path}: no such file"))
        elif not path.is_file():
            problems.append(Problem(case.id, f"{column} {path}: not a file"))
        elif not os.access(path, os.R_OK):
            problems.append(Problem(case.id, f"{column} {path}: not readable"))
    try:
        load_config(pipeline.config, case_overrides(pipeline, case))
    except OtregError as err:
        problems.append(Problem(case.id, f"registration config: {err}"))
    fmt = case.landmark_format or pipeline.landmarks.format
    spacing = case.spacing or pipeline.landmarks.spacing
    if case.source_landmarks is not None and fmt == "dirlab" and spacing is None:
        problems.append(
            Problem(case.id, "dirlab landmarks need a spacing (column or [landmarks] spacing)")
        )
    return problems


def validate(path: str | Path) -> tuple[Pipeline, list[Case], list[Problem]]:
    """Load a pipeline and its manifest and check every input of every case.

    Returns:
        (pipeline, cases, problems): no problems means the batch can run.

    Raises:
        ConfigError: the pipeline file or the manifest itself is unusable (one message naming
            the file, row and column).
    """
    pipeline = load_pipeline(path)
    cases = read_manifest(pipeline.manifest)
    problems: list[Problem] = []
    for case in cases:
        problems.extend(check_case(pipeline, case))
    return pipeline, cases, problems


def validated(path: str | Path) -> tuple[Pipeline, list[Case]]:
    """:func:`validate`, raising one ConfigError that lists every problem."""
    pipeline, cases, problems = validate(path)
    if problems:
        listing = "\n  ".join(str(p) for p in problems)
        raise ConfigError(
            f"{pipeline.path}: {len(problems)} problem(s), nothing was run:\n  {listing}"
        )
    return pipeline, cases
