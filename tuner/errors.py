"""User-facing errors: each one says what went wrong and what to do about it.

The CLI prints these without a traceback; anything else is a bug and keeps its traceback.
"""


class TunerError(Exception):
    """An error caused by the user's input or environment, with a message that says what to fix."""


class ModelConfigError(TunerError):
    """A model config.json that is missing, malformed or of an unknown architecture."""


class NoGpuError(TunerError):
    """A GPU-only operation was asked for on a machine without a usable CUDA device."""


class DatabaseError(TunerError):
    """The database cannot be opened, migrated, or is locked."""


class ExportError(TunerError):
    """An export that would overwrite files or has nothing to write."""


class EngineError(TunerError):
    """An inference engine that failed to launch, crashed or cannot be reached."""


class OutputPathError(TunerError):
    """An output file or folder (--out, --json, --log-dir, --data-dir) that cannot be created or written."""


class NothingCanLaunchError(EngineError):
    """A search stopped because its baseline failed for a reason no searched flag can change."""


class JobError(TunerError):
    """A job or work unit that does not exist, or a request that does not fit it (bad spec, wrong state)."""


class LeaseLostError(JobError):
    """A worker reported on a work unit it no longer holds: re-claimed after its lease expired, cancelled, or
    already finished. The worker should stop working on it; its result would not be kept."""


class WorkloadSourceError(TunerError):
    """Metrics a workload is learned from that cannot be read or do not describe traffic: an unreachable
    Prometheus, a selector matching nothing, a window without requests, counters reset inside the window."""


class WorkloadError(TunerError):
    """A learned workload that does not exist, a name already taken, or a replay that cannot be built."""
