"""Cohorts: a pipeline file and a manifest of cases, run locally (workers, shards, resume) or
as Slurm job arrays, each case's state in ``OUT/<case>/status.json``, and a cohort summary.

    otreg batch validate PIPELINE.toml
    otreg batch run PIPELINE.toml [--jobs N] [--shard i/N] [--retry-failed] [--fail-fast]
    otreg batch slurm PIPELINE.toml [--submit]
    otreg batch status OUT | PIPELINE.toml
    otreg batch summary OUT | PIPELINE.toml
"""

from .local import BatchResult, run_batch
from .manifest import Case, read_manifest
from .pipeline import Pipeline, load_pipeline
from .summary import batch_status, write_summary
from .validate import validate

__all__ = [
    "BatchResult",
    "Case",
    "Pipeline",
    "batch_status",
    "load_pipeline",
    "read_manifest",
    "run_batch",
    "validate",
    "write_summary",
]
