"""The inputs of a data pass in the seed's layout: one float32 CHW ``.bin`` per image + gen_dataset_info's file.

A TensorCache provides its own (written once per cache fingerprint and shared, reid_tasks.preprocess); an array
(tests, ad-hoc runs) is written under the run's directory. Either way the layout is checked against the inputs
before a runner reads it, because the outputs are mapped back to inputs by file stem.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reid_tasks.errors import BenchmarkError
from reid_tasks.utils import atomic_write_text

from .runner import SeedInputs, info_file_text

if TYPE_CHECKING:
    import numpy as np

    from reid_tasks.targets.timing import BatchSource


def seed_inputs(inputs: np.ndarray | BatchSource, dest: Path, hw: tuple[int, int]) -> SeedInputs:
    """The cache's seed layout (``seed_layout()``, else ``write_seed_layout(dest)``), or ``inputs`` written
    under ``dest``; BenchmarkError when the layout does not match the inputs."""
    import numpy as np

    from reid_tasks.targets.timing import as_source

    h, w = hw
    n = len(inputs)
    lay: Any = None
    if not isinstance(inputs, np.ndarray) and hasattr(inputs, "seed_layout"):
        lay = inputs.seed_layout()
    elif not isinstance(inputs, np.ndarray) and hasattr(inputs, "write_seed_layout"):
        lay = inputs.write_seed_layout(dest)
    if lay is not None:
        layout = SeedInputs(Path(lay.bin_dir), Path(lay.info_path), list(lay.stems))
    else:
        source = as_source(inputs)
        if tuple(source.batch(0, 1).shape[1:]) != (3, h, w):
            raise BenchmarkError(f"ascend310: inputs must be [N,3,{h},{w}], got {source.batch(0, 1).shape}")
        bin_dir, info = dest / "prep_dataset", dest / "prep_bin.info"
        if bin_dir.exists():
            shutil.rmtree(bin_dir)
        bin_dir.mkdir(parents=True)
        stems = [f"{i:06d}" for i in range(n)]
        for s in range(0, n, 256):
            x = np.ascontiguousarray(source.batch(s, min(s + 256, n)), dtype=np.float32)
            for j, row in enumerate(x):
                row.tofile(bin_dir / f"{stems[s + j]}.bin")
        atomic_write_text(info, info_file_text([bin_dir / f"{t}.bin" for t in stems], (h, w)))
        layout = SeedInputs(bin_dir, info, stems)
    check_layout(layout, n, 3 * h * w * 4)
    return layout


def check_layout(layout: SeedInputs, n: int, nbytes: int) -> None:
    """The layout holds exactly ``n`` distinct stems, mappable from output names, of ``nbytes`` each."""
    bin_dir, stems = layout.bin_dir, layout.stems
    if len(stems) != n:
        raise BenchmarkError(f"ascend310: seed layout {bin_dir} has {len(stems)} stems for {n} inputs")
    if len(set(stems)) != len(stems):
        raise BenchmarkError(f"ascend310: duplicate stems in the seed layout {bin_dir}")
    dotted = [s for s in stems if "." in s]
    if dotted:  # ais_bench names outputs basename.split('.')[0] + '_0.bin'
        raise BenchmarkError(f"ascend310: stems with '.' cannot be mapped back from the outputs: {dotted[:5]}")
    present = {p.name: p for p in bin_dir.glob("*.bin")}
    expected = {f"{s}.bin" for s in stems}
    odd = sorted(set(present) - expected)[:5] + sorted(expected - set(present))[:5]
    if odd:
        raise BenchmarkError(f"ascend310: {bin_dir} must hold exactly the {n} input .bin files; odd: {odd}")
    wrong = [s for s in stems[:1] + stems[-1:] if present[f"{s}.bin"].stat().st_size != nbytes]
    if wrong:
        raise BenchmarkError(f"ascend310: {bin_dir}/{wrong[0]}.bin is not {nbytes} bytes (float32 CHW)")
