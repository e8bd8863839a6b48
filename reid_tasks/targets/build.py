"""The artifact builder: one directory per (target, batch, precision), built atomically and reused when its
inputs have not changed; and the int8 calibration set every target selects the same way.

numpy is imported inside the two functions that handle arrays, so ``Target`` (and the DAG that lists targets)
can import this module cheaply.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reid_tasks.errors import ConversionError, TargetError
from reid_tasks.targets.records import BUILD_LOG_NAME, MANIFEST_NAME, Artifact, BuildOutput
from reid_tasks.utils import atomic_write_json, replace_dir, sha256_file

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger("reid_tasks.targets")

_MANIFEST_VERSION = 1


def build_artifact(
    *,
    target: str,
    name: str,
    out_dir: Path,
    key: Mapping[str, Any],
    batch_size: int | None,
    precision: str,
    tool_versions: Mapping[str, str],
    build: Callable[[Path], BuildOutput],
) -> Artifact:
    """Build ``out_dir/name/`` atomically, or reuse it when its manifest records the same ``key``.

    ``build(tmp_dir)`` writes the files into a temporary directory beside the final one; the directory is
    renamed into place only when the build succeeded. The manifest ``artifact.json`` holds the Artifact and
    the key (ONNX sha256, batch, precision, settings, tool versions, calibration set).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / name
    key = json.loads(json.dumps(key, default=str))  # normalise for comparison with the stored JSON
    reused = _reuse(final, key)
    if reused is not None:
        log.info("%s: reusing %s (same inputs)", target, final)
        return reused
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=out_dir))
    try:
        t0 = time.perf_counter()
        result = build(tmp)
        seconds = time.perf_counter() - t0
        main = tmp / result.main_file
        if not main.is_file():
            raise ConversionError(f"{target}: build produced no {result.main_file} in {tmp}")
        (tmp / BUILD_LOG_NAME).write_text(result.log or f"$ {result.command}\n", encoding="utf-8")
        files = {
            p.relative_to(tmp).as_posix(): sha256_file(p)
            for p in sorted(tmp.rglob("*"))
            if p.is_file() and p.name not in (MANIFEST_NAME, BUILD_LOG_NAME)
        }
        artifact = Artifact(
            target=target,
            path=str((final / result.main_file).resolve()),
            sha256=files[Path(result.main_file).as_posix()],
            batch_size=batch_size,
            precision=precision,
            build_seconds=round(seconds, 3),
            command=result.command,
            tool_versions=dict(tool_versions),
            build_log=str((final / BUILD_LOG_NAME).resolve()),
            calibration=result.calibration,
            extra={**result.extra, "files": files},
        )
        manifest = {"version": _MANIFEST_VERSION, "key": key, "artifact": artifact.to_dict()}
        atomic_write_json(tmp / MANIFEST_NAME, manifest)
        replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return artifact


def _reuse(final: Path, key: Mapping[str, Any]) -> Artifact | None:
    manifest = final / MANIFEST_NAME
    if not manifest.is_file():
        return None
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
        if data.get("key") != key:
            return None
        artifact = Artifact.from_dict(data["artifact"])
    except (OSError, ValueError, KeyError, TargetError):
        return None
    for rel, digest in artifact.extra.get("files", {}).items():
        p = final / rel
        if not p.is_file() or sha256_file(p) != digest:
            log.warning("artifact %s: %s changed on disk; rebuilding", final, rel)
            return None
    return artifact


@dataclass(frozen=True)
class CalibrationSet:
    """Preprocessed int8 calibration images and where they came from: ``record`` holds ``split``
    (``train`` | ``gallery-holdout``), ``selection``, ``num_images``, ``images`` and the set's ``fingerprint``.
    What the pipeline passes (reid_tasks.calibration): never the evaluated query images."""

    images: np.ndarray
    record: dict[str, Any]


def calibration_key(calibration: Any) -> Any:
    """What identifies a calibration set in the artifact's key: fingerprint, array digest or cache path."""
    if calibration is None:
        return None
    if isinstance(calibration, CalibrationSet):
        return {"fingerprint": calibration.record.get("fingerprint")}
    import numpy as np

    if isinstance(calibration, np.ndarray):
        return {"array_sha256": hashlib.sha256(np.ascontiguousarray(calibration).tobytes()).hexdigest()}
    if isinstance(calibration, str | os.PathLike):
        return {"cache": str(Path(calibration).resolve())}
    return {"fingerprint": str(getattr(calibration, "fingerprint", type(calibration).__name__))}


def select_calibration(calibration: Any, num_images: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Calibration images + a record of them: a whole CalibrationSet, an array's first ``num_images`` rows,
    or (targets CLI) the first query images of a TensorCache."""
    if calibration is None:
        raise ConversionError("int8 needs calibration data: pass calibration=<CalibrationSet, TensorCache or array>")
    import numpy as np

    if isinstance(calibration, CalibrationSet):  # used whole, so its fingerprint names exactly what was used
        if calibration.images.shape[0] == 0:
            raise ConversionError(f"calibration set is empty: {calibration.record}")
        return np.ascontiguousarray(calibration.images, dtype=np.float32), dict(calibration.record)

    if isinstance(calibration, str | os.PathLike):
        from reid_tasks.preprocess import TensorCache

        calibration = TensorCache.open(calibration)
    if isinstance(calibration, np.ndarray):
        n = min(num_images, calibration.shape[0])
        data = np.ascontiguousarray(calibration[:n], dtype=np.float32)
        record = {"source": "array", "split": "given", "selection": "first", "num_images": n}
        return data, record
    num_query = int(getattr(calibration, "num_query", len(calibration)))
    n = min(num_images, num_query)
    if n <= 0:
        raise ConversionError("calibration cache has no query images")
    data = np.ascontiguousarray(calibration.batch(0, n), dtype=np.float32)
    items = list(getattr(calibration, "items", []))[:n]
    record = {
        "source": "tensor-cache",
        "cache": str(getattr(calibration, "dir", getattr(calibration, "root", ""))),
        "fingerprint": str(getattr(calibration, "fingerprint", "")),
        "split": "query",
        "selection": "first",
        "num_images": n,
        "images": [str(getattr(it, "path", it)) for it in items],
    }
    return data, record
