"""Pipeline jobs: a TOML job file, a run directory with a manifest, the torch-free stages.

``cfvision pipeline JOB.toml`` runs a job (:mod:`cfvision.pipeline`); this package holds what
``cfcore`` itself needs to run its stages in a process of their own, without torch:

- :mod:`cfcore.pipeline.job` — the job file, its validator, the stages and their wiring;
- :mod:`cfcore.pipeline.rundir` — the run directory: lock, stage folders, records, manifest;
- :mod:`cfcore.pipeline.stages` — the stage harness and the stages data → cluster, tags.
"""

from cfcore.pipeline.job import STAGE_NAMES, STAGES, Job, JobError, load_job, parse_job
from cfcore.pipeline.rundir import RunDir, RunLockedError

__all__ = [
    "STAGES",
    "STAGE_NAMES",
    "Job",
    "JobError",
    "RunDir",
    "RunLockedError",
    "load_job",
    "parse_job",
]
