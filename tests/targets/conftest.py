"""Fixtures for the target tests: a tiny ONNX model with the real I/O contract, inputs, a fake cache."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

H, W = 256, 128


class FakeCache:
    """The TensorCache surface the targets use (len, batch, iter_batches, items, num_query, fingerprint)."""

    def __init__(self, data: np.ndarray, num_query: int) -> None:
        self.data = data
        self.num_query = num_query
        self.fingerprint = f"fake-{data.shape[0]}-{num_query}"
        self.items = [f"img{i:04d}.jpg" for i in range(data.shape[0])]
        self.batch_calls = 0

    def __len__(self) -> int:
        return int(self.data.shape[0])

    def batch(self, start: int, stop: int) -> np.ndarray:
        self.batch_calls += 1
        return self.data[start:stop].copy()

    def iter_batches(self, batch_size: int):
        for s in range(0, len(self), batch_size):
            yield self.batch(s, min(s + batch_size, len(self)))


def _export_tiny(path: Path) -> Path:
    import torch
    from torch import nn

    torch.manual_seed(0)

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 16, 7, stride=4, padding=3)
            self.bn1 = nn.BatchNorm2d(16)
            self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(32, 2048)
            self.neck = nn.BatchNorm1d(2048)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.relu(self.bn1(self.conv1(x)))
            x = torch.relu(self.conv2(x))
            return self.neck(self.fc(self.pool(x).flatten(1)))

    model = Tiny().eval()
    with torch.no_grad():  # non-trivial BN statistics
        model.bn1.running_mean.uniform_(-0.2, 0.2)
        model.bn1.running_var.uniform_(0.5, 2.0)
        model.neck.running_var.uniform_(0.5, 2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            torch.zeros(1, 3, H, W),
            str(path),
            input_names=["image"],
            output_names=["class"],
            dynamic_axes={"image": {0: "batch"}, "class": {0: "batch"}},
            opset_version=11,
            dynamo=False,
        )
    return path


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small dynamic-batch ONNX model: "image" [N,3,256,128] -> "class" [N,2048], opset 11."""
    return _export_tiny(tmp_path_factory.mktemp("tiny") / "tiny.onnx")


@pytest.fixture(scope="session")
def images() -> np.ndarray:
    """Normalised-looking float32 NCHW inputs (21 rows: not a multiple of 4 or 16)."""
    rng = np.random.default_rng(1)
    return rng.standard_normal((21, 3, H, W), dtype=np.float32)


@pytest.fixture()
def fake_cache(images: np.ndarray) -> FakeCache:
    return FakeCache(images, num_query=9)


def ort_reference(onnx_path: Path, x: np.ndarray) -> np.ndarray:
    """Plain onnxruntime on the dynamic model (no optimisation), the parity reference for the tiny model."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    return sess.run(["class"], {"image": x})[0]


@pytest.fixture(scope="session")
def make_cache() -> type[FakeCache]:
    """The FakeCache class (tests build caches with their own data)."""
    return FakeCache


@pytest.fixture(scope="session")
def ort_ref():
    """ort_reference(onnx_path, x): plain onnxruntime on the dynamic model."""
    return ort_reference


@pytest.fixture(scope="session")
def real_onnx(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real ResNet50 export: the lead's session fixture ``onnx_model`` when present, else exported here."""
    try:
        return Path(request.getfixturevalue("onnx_model"))
    except pytest.FixtureLookupError:
        pass
    from reid_tasks.config import load_config
    from reid_tasks.export import export_onnx
    from reid_tasks.model import write_demo_checkpoint

    root = tmp_path_factory.mktemp("real")
    ckpt = root / "demo.pth"
    write_demo_checkpoint(ckpt, seed=0)
    cfg = load_config(opts=["TEST.WEIGHT", str(ckpt)])
    return Path(export_onnx(cfg, root / "ReID.onnx").onnx_path)


@pytest.fixture(scope="session")
def small_cache(tmp_path_factory: pytest.TempPathFactory):
    """A real TensorCache of a small synthetic Market-1501 (query first, then gallery)."""
    from reid_tasks.config import load_config
    from reid_tasks.datasets import Market1501
    from reid_tasks.preprocess import preprocess_dataset
    from reid_tasks.synthetic import make_synthetic_market1501

    root = tmp_path_factory.mktemp("market")
    info = make_synthetic_market1501(root, num_ids=4, gallery_per_id=2, num_distractors=2, num_junk=1)
    return preprocess_dataset(Market1501(info.root), root / "cache", load_config(), workers=1, progress=False)
