"""The pipeline file: one TOML that says what a batch runs, where, and how.

```toml
manifest = "cases.csv"          # the cases (see otreg.batch.manifest); relative to this file
output = "results"              # OUT: one folder per case, logs/, summary.*

[registration]
config = "lung_vessels"         # a preset or a TOML file (relative to this file);
                                # omitted: each case gets the preset of its input type
set = ["input.points=5000"]     # overrides, as `otreg register --set`

[run]
jobs = 1                        # cases at once (local runs)
threads = 0                     # threads per case; 0: the CPUs given, split between the jobs
retry_failed = false            # run failed cases again
fail_fast = false               # start no new case after a failure

[landmarks]                     # how the manifest's landmark files are read
format = "mm"                   # mm (x y z rows) or dirlab (1-based voxel indices)
spacing = [0.97, 0.97, 2.5]     # dirlab voxel size, mm

[slurm]                         # defaults of `otreg batch slurm` (its options win)
partition = "cpu"
time = "02:00:00"
cpus_per_task = 2
mem = "8G"
gpus = 0
array_parallelism = 0           # at most K array tasks at once (0: no limit)
shards = 0                      # array tasks (0: one per case)
```
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PIPELINE_KEYS_HELP = "see the README's Batch section"


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegistrationTable(_Table):
    config: str | None = Field(
        None, description="preset name or TOML file; None: the preset of each case's input type"
    )
    set: list[str] = Field(default_factory=list, description="section.key=value overrides")


class RunTable(_Table):
    jobs: int = Field(1, ge=1, description="cases at once")
    threads: int = Field(0, ge=0, description="threads per case (0: the allocation split)")
    retry_failed: bool = False
    fail_fast: bool = False


class LandmarkTable(_Table):
    format: Literal["mm", "dirlab"] = "mm"
    spacing: tuple[float, float, float] | None = None


class SlurmTable(_Table):
    partition: str | None = None
    time: str | None = None
    cpus_per_task: int = Field(1, ge=1)
    mem: str | None = None
    gpus: int = Field(0, ge=0)
    array_parallelism: int = Field(0, ge=0)
    shards: int = Field(0, ge=0)


class PipelineFile(_Table):
    """The schema of the pipeline TOML (paths as written, relative to the file)."""

    manifest: str
    output: str
    registration: RegistrationTable = Field(default_factory=RegistrationTable)
    run: RunTable = Field(default_factory=RunTable)
    landmarks: LandmarkTable = Field(default_factory=LandmarkTable)
    slurm: SlurmTable = Field(default_factory=SlurmTable)


@dataclass(frozen=True)
class Pipeline:
    """A loaded pipeline: the file's settings with every path made absolute.

    Attributes:
        path: the pipeline file.
        manifest: the manifest file.
        output: OUT, the output root.
        config: the registration config: a preset name, an absolute TOML path, or None.
        overrides: the pipeline's ``section.key=value`` overrides (each case may add its own).
        settings: the whole parsed file.
    """

    path: Path
    manifest: Path
    output: Path
    config: str | None
    overrides: tuple[str, ...]
    settings: PipelineFile

    @property
    def run(self) -> RunTable:
        return self.settings.run

    @property
    def landmarks(self) -> LandmarkTable:
        return self.settings.landmarks

    @property
    def slurm(self) -> SlurmTable:
        return self.settings.slurm


def load_pipeline(path: str | Path) -> Pipeline:
    """Read and check a pipeline file (not yet its manifest: see :func:`otreg.batch.validate`).

    Raises:
        ConfigError: the file is missing, not TOML, or has an unknown key or a bad value.
    """
    from ..config import preset_names

    path = Path(path).absolute()
    if not path.is_file():
        raise ConfigError(f"{path}: no such pipeline file")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the pipeline file: {err.strerror}") from None
    try:
        settings = PipelineFile.model_validate(data)
    except ValidationError as err:
        problems = []
        for e in err.errors():
            key = ".".join(str(p) for p in e["loc"]) or "(top level)"
            if e["type"] == "extra_forbidden":
                problems.append(f"unknown key {key!r}")
            elif e["type"] == "missing":
                problems.append(f"{key}: missing")
            else:
                problems.append(f"{key}: {e['msg']} (got {e.get('input')!r})")
        raise ConfigError(
            f"{path}: invalid pipeline: {'; '.join(problems)} ({PIPELINE_KEYS_HELP})"
        ) from None
    here = path.parent
    config = settings.registration.config
    if config is not None:
        candidate = here / config
        if candidate.is_file():
            config = str(candidate.resolve())
        elif config not in preset_names():
            raise ConfigError(
                f"{path}: registration.config {config!r} is neither a file (looked for "
                f"{candidate}) nor a preset ({', '.join(preset_names())})"
            )
    for item in settings.registration.set:
        if "=" not in item:
            raise ConfigError(f"{path}: registration.set: {item!r} is not section.key=value")
    return Pipeline(
        path=path,
        manifest=(here / settings.manifest).resolve(),
        output=(here / settings.output).resolve(),
        config=config,
        overrides=tuple(settings.registration.set),
        settings=settings,
    )
