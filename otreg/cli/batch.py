"""otreg batch validate | run | slurm | status | summary: cohorts from a pipeline file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ._common import JsonOption, VerboseOption, print_json, setup_logging

batch_app = typer.Typer(
    help="Cohorts: a pipeline file + a manifest of cases, run locally or as Slurm arrays.",
    no_args_is_help=True,
)

PipelineArgument = typer.Argument(..., help="The pipeline TOML file (see the README).")


@batch_app.command()
def validate(pipeline: Path = PipelineArgument, json_: bool = JsonOption) -> None:
    """Check the pipeline, its manifest and every input of every case; run nothing.
    Exit 0 when all is well, 2 with the list of problems."""
    from ..batch import validate as validate_pipeline

    loaded, cases, problems = validate_pipeline(pipeline)
    if json_:
        print_json(
            {
                "pipeline": str(loaded.path),
                "cases": len(cases),
                "problems": [{"case": p.case, "message": p.message} for p in problems],
            }
        )
    elif problems:
        typer.echo(f"{loaded.path}: {len(problems)} problem(s) in {len(cases)} case(s):", err=True)
        for problem in problems:
            typer.echo(f"  {problem}", err=True)
    else:
        typer.echo(f"{loaded.path}: {len(cases)} case(s), all inputs readable -> {loaded.output}")
    if problems:
        raise typer.Exit(2)


@batch_app.command()
def run(
    pipeline: Path = PipelineArgument,
    jobs: int | None = typer.Option(
        None, "--jobs", "-j", min=1, help="Cases at once (default: the pipeline's run.jobs)."
    ),
    shard: str | None = typer.Option(
        None, "--shard", help="Run shard i/N only: every N-th case from the i-th (1-based)."
    ),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Run failed cases again."),
    fail_fast: bool = typer.Option(False, "--fail-fast", help="Start no new case after a failure."),
    threads: int | None = typer.Option(
        None,
        "--threads",
        min=1,
        help="Threads per case (default: the CPUs given, split between the jobs).",
    ),
    verbose: int = VerboseOption,
) -> None:
    """Run every case not yet done (a rerun resumes). Exit 0 all ok, 3 some failed, 2 invalid."""
    setup_logging(verbose)
    from ..batch import run_batch
    from ..batch.local import parse_shard
    from .console import stderr

    with _Progress(stderr) as progress:
        result = run_batch(
            pipeline,
            jobs=jobs,
            shard=parse_shard(shard),
            retry_failed=retry_failed or None,
            fail_fast=fail_fast or None,
            threads=threads,
            on_event=progress.update,
        )
    typer.echo(
        f"{len(result.ok)} ok, {len(result.already_done)} done before, {len(result.failed)} failed"
        + (
            f", {len(result.skipped_failed)} failed before (--retry-failed runs them)"
            if result.skipped_failed
            else ""
        )
        + (f", {len(result.elsewhere)} running elsewhere" if result.elsewhere else "")
        + (f", {len(result.not_started)} not run" if result.not_started else "")
    )
    if result.exit_code:
        raise typer.Exit(result.exit_code)


class _Progress:
    """A live bar on a terminal; one plain line per event otherwise (Slurm logs)."""

    def __init__(self, console):
        self.console = console
        self.live = console.is_terminal
        self.counts = {"ok": 0, "failed": 0, "running": 0}
        self.total = 0
        self.bar: Any = None

    def __enter__(self):
        if self.live:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("cases"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[detail]}"),
                TimeRemainingColumn(),
                console=self.console,
                refresh_per_second=2,
            )
            self.bar.__enter__()
            self.task = self.bar.add_task("cases", total=None, detail="")
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def update(self, event: dict[str, Any]) -> None:
        if event["event"] == "start":
            self.total = event["total"]
            line = (
                f"{event['total']} case(s) to run ({event['done']} done before), "
                f"{event['jobs']} at once, {event['threads']} thread(s) each"
            )
            if self.bar is not None:
                self.bar.update(self.task, total=self.total)
                self.bar.console.print(line)
            else:
                self.console.print(line, highlight=False, soft_wrap=True)
            return
        state = event["state"]
        if state == "running":
            self.counts["running"] += 1
        else:
            self.counts["running"] -= 1
            if state in ("ok", "failed"):
                self.counts[state] += 1
        finished = self.counts["ok"] + self.counts["failed"]
        detail = f"{self.counts['ok']} ok, {self.counts['failed']} failed, {self.counts['running']} running"
        if self.bar is not None:
            self.bar.update(self.task, completed=finished, detail=detail)
            if state == "failed":
                self.bar.console.print(
                    f"{event['case']}: failed: {event.get('error')}", highlight=False
                )
            return
        text = f"{event['case']}: {state}"
        if "seconds" in event:
            text += f" ({event['seconds']:.1f} s)"
        if event.get("error"):
            text += f": {event['error']}"
        self.console.print(
            f"{text} [{finished}/{self.total}; {detail}]", highlight=False, soft_wrap=True
        )


@batch_app.command()
def slurm(
    pipeline: Path = PipelineArgument,
    partition: str | None = typer.Option(None, "--partition", help="Slurm partition."),
    time: str | None = typer.Option(
        None, "--time", help="Time limit per array task, e.g. 02:00:00."
    ),
    cpus_per_task: int | None = typer.Option(
        None, "--cpus-per-task", min=1, help="CPUs per array task (its threads)."
    ),
    mem: str | None = typer.Option(None, "--mem", help="Memory per array task, e.g. 8G."),
    gpus: int | None = typer.Option(None, "--gpus", min=0, help="GPUs per array task."),
    array_parallelism: int | None = typer.Option(
        None, "--array-parallelism", min=0, help="At most K tasks at once (%K)."
    ),
    shards: int | None = typer.Option(
        None, "--shards", min=0, help="Array tasks (default: one per case)."
    ),
    submit: bool = typer.Option(
        False, "--submit", help="Submit the script with sbatch; print the job id."
    ),
) -> None:
    """Write OUT/batch.sbatch, a job array with one task per shard, and print it (or submit it)."""
    from ..batch.slurm import options_for, write_script
    from ..batch.slurm import submit as submit_script
    from ..batch.validate import validated

    loaded, cases = validated(pipeline)
    options = options_for(
        loaded,
        len(cases),
        partition=partition,
        time=time,
        cpus_per_task=cpus_per_task,
        mem=mem,
        gpus=gpus,
        array_parallelism=array_parallelism,
        shards=shards,
    )
    script = write_script(loaded, options)
    if submit:
        job = submit_script(script)
        typer.echo(f"submitted {script}: job {job}", err=True)
        typer.echo(job)
    else:
        typer.echo(script.read_text(), nl=False)
        typer.echo(f"# written to {script}; submit with: sbatch {script}", err=True)


def _cases_and_output(path: Path) -> tuple[Path, list[str] | None]:
    """OUT, or a pipeline file (then its manifest's cases, pending ones included)."""
    if path.is_file() and path.suffix == ".toml":
        from ..batch import load_pipeline, read_manifest

        loaded = load_pipeline(path)
        return loaded.output, [c.id for c in read_manifest(loaded.manifest)]
    if not path.is_dir():
        from ..errors import InputError

        raise InputError(path, "not a batch output folder nor a pipeline file")
    return path, None


@batch_app.command()
def status(
    where: Path = typer.Argument(..., help="OUT, or the pipeline file (counts pending cases too)."),
    json_: bool = JsonOption,
) -> None:
    """Counts per state, the failed cases and their errors, the running ones, time left."""
    from ..batch import batch_status

    output, cases = _cases_and_output(where)
    report = batch_status(output, cases)
    if json_:
        print_json(report)
        return
    counts = ", ".join(f"{n} {state}" for state, n in report["counts"].items() if n)
    typer.echo(f"{output}: {report['cases']} case(s): {counts or 'none yet'}")
    if report["median_seconds_per_case"] is not None:
        typer.echo(f"median time per case {report['median_seconds_per_case']:.1f} s")
    if report["estimated_seconds_left"]:
        typer.echo(f"estimated time left {report['estimated_seconds_left'] / 60:.1f} min")
    for item in report["running"]:
        typer.echo(
            f"  running  {item['case']}: {item['host']} pid {item['pid']}, {item['running_s']:.0f} s"
        )
    for item in report["failed"]:
        typer.echo(f"  {item['state']:8} {item['case']}: {item['kind']}: {item['message']}")


@batch_app.command()
def summary(
    where: Path = typer.Argument(..., help="OUT, or the pipeline file."),
    json_: bool = JsonOption,
) -> None:
    """Write OUT/summary.csv, summary.json and index.html (one row per case, outliers flagged)."""
    from ..batch import write_summary

    output, cases = _cases_and_output(where)
    rows = write_summary(output, cases)
    if json_:
        print_json(rows)
        return
    outliers = [r for r in rows if r["outlier"]]
    typer.echo(
        f"{output / 'summary.csv'}, summary.json, index.html: {len(rows)} case(s), {len(outliers)} outlier(s)"
    )
    for row in outliers:
        typer.echo(f"  {row['case']}: {row['outlier']}")
