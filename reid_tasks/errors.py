"""Exceptions raised by reid_tasks.

Every error says what was wrong and where (file, key, shape, command)::

    ReidError
    ├── ConfigError          unknown key, bad value, unreadable yml
    │   ├── FleetError           undeclared device or host (reid_tasks.fleet)
    │   └── RunWontFit           a benchmark cannot finish within its task's time limit
    ├── CheckpointError      missing/unexpected keys, wrong shapes, untrusted pickle
    ├── ExportError          ONNX export, checker or parity failure
    ├── DatasetError         missing/empty folder, unparseable file name
    ├── PreprocessError      unreadable/corrupt images, stale or broken cache
    ├── EvaluationError      no valid query, NaN features, shape mismatch
    ├── TargetError          inference targets
    │   ├── TargetUnavailable    tool/runtime/device missing
    │   ├── PrecisionNotSupported
    │   ├── ConversionError      converter failed (command + stderr tail)
    │   ├── BenchmarkError       runner failed, missing/odd outputs
    │   └── DeviceBusyError      device not idle within the timeout
    └── ResultsError         results database and regression rules
"""

from __future__ import annotations


class ReidError(Exception):
    """Base class of every error raised by reid_tasks."""


class ConfigError(ReidError):
    """Bad configuration: unknown key, bad value or unreadable file."""


class RunWontFit(ConfigError):
    """The work a benchmark task was given cannot finish within its time limit (retrying cannot help)."""


class CheckpointError(ReidError):
    """Checkpoint cannot be loaded into the network."""


class ExportError(ReidError):
    """ONNX export, validation or parity check failed."""


class DatasetError(ReidError):
    """Dataset layout or file names are wrong."""


class PreprocessError(ReidError):
    """Images cannot be preprocessed or the cache is unusable."""


class EvaluationError(ReidError):
    """Features or labels cannot be evaluated."""


class TargetError(ReidError):
    """Inference target failure."""


class TargetUnavailable(TargetError):
    """The target's runtime, tools or device are not present."""


class PrecisionNotSupported(TargetError):
    """The target cannot build an artifact in the requested precision."""


class ConversionError(TargetError):
    """Model conversion failed."""


class BenchmarkError(TargetError):
    """Benchmark run failed or produced unusable output."""


class DeviceBusyError(TargetError):
    """The accelerator was not idle within the allowed time."""


class ResultsError(ReidError):
    """Results database or regression-rule failure."""


class ResultsNotFound(ResultsError):
    """A run or alert asked for by key or id is not in the results database."""
