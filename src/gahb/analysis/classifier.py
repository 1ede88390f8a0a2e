"""The garment classifier behind the sample-quality measure (paper section 2, Fig 2: "high visual quality").

The paper judges the samples of its largest-N networks by eye. :mod:`gahb.analysis.quality`
measures it instead, in the feature space of a small CNN that gahb trains once on Fashion-MNIST
(the labels ship with the Debian package beside the images) and caches like the dataset pool:

* :class:`GarmentClassifier`: two stride-2 3x3 convolutions (ReLU), a fully connected feature layer
  of ``features`` <= 64 units, a ReLU, then a linear layer to the 10 classes. ``features(x)`` (the
  feature layer before its ReLU) is the embedding the Frechet distance uses; ``forward`` gives the
  logits whose max-softmax is the confidence.
* What it trains on: the deduplicated pool (:mod:`gahb.data.prepared`) without the images a study
  holds out, so that the images the measure compares samples with are as new to the classifier as
  the samples are. :func:`held_out_rows` names them: the split's test set (seed, ``n_test``) and as
  many images of the first training half, the "new real images" of the floor (the test images
  against training images). Both official Fashion-MNIST parts (train and t10k) are in the pool;
  every other image is used, so the classifier depends on the split seed and ``n_test``.
* Deterministic: initialisation from ``seed`` (the global RNG is forked, not advanced), one seeded
  data order, cosine-decayed Adam, trained on one thread (a thread count can change the rounding of
  a reduction). The standard preset trains in about 50 s of CPU time (4 epochs of 67,951 images;
  91.5% accuracy on the held-out test images); the tiny one in about 3 s (84%).
* Cached: ``<root>/<kind>-w<widths>-f<features>-<hash>/`` holds ``model.safetensors`` (loaded
  without pickle) and ``manifest.json`` written last: the request it was built from (configuration,
  pool and label hashes, the held-out rows), the sha256 of the weights, the training rows' hash,
  accuracy on the held-out test images, the training time. A directory whose request differs, or
  whose weights do not match their hash, is rebuilt. ``<root>`` is ``$GAHB_CACHE/classifiers`` or
  ``~/.cache/gahb/classifiers``, or the ``classifiers`` folder of a study's ``cache_dir``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gahb.data.prepared import Pool, _dir_lock
from gahb.data.splits import SPLIT_METHOD, PoolSplit, seeded_permutation, split_pool
from gahb.utils.io import _atomic, atomic_write_json, file_sha256

FORMAT_VERSION = 1
MAX_FEATURES = 64  # the feature dimension of the Frechet distance: few enough for a few hundred samples
WEIGHTS_NAME = "model.safetensors"


@dataclass(frozen=True)
class ClassifierConfig:
    """How the classifier is built and trained (module docstring)."""

    widths: tuple = (32, 64)  # channels of the two stride-2 convolutions
    features: int = 64  # the feature layer (<= MAX_FEATURES)
    epochs: int = 4
    batch_size: int = 128
    lr: float = 2e-3  # Adam, decayed to 0 along a cosine over every step
    seed: int = 0
    train_images: int | None = None  # None: every image that is not held out; else a seeded subset

    def validate(self) -> None:
        if len(self.widths) != 2 or any(int(w) < 1 for w in self.widths):
            raise ValueError(f"widths must be two positive channel counts, got {self.widths!r}")
        if not 1 <= self.features <= MAX_FEATURES:
            raise ValueError(f"features must lie in [1, {MAX_FEATURES}], got {self.features}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("epochs and batch_size must be >= 1 and lr > 0")
        if self.train_images is not None and self.train_images < 1:
            raise ValueError(f"train_images must be None or >= 1, got {self.train_images}")


# "standard": the measure of the studies; "tiny": the same code in seconds (the test preset, the suite)
CLASSIFIERS = {
    "standard": ClassifierConfig(),
    "tiny": ClassifierConfig(widths=(8, 16), features=16, epochs=2, batch_size=64, lr=3e-3, train_images=16_384),
}


def classifier_config(name_or_config) -> ClassifierConfig:
    """A preset name of :data:`CLASSIFIERS` or a :class:`ClassifierConfig`, validated."""
    if isinstance(name_or_config, ClassifierConfig):
        cfg = name_or_config
    elif name_or_config in CLASSIFIERS:
        cfg = CLASSIFIERS[name_or_config]
    else:
        raise ValueError(f"unknown classifier {name_or_config!r}; presets: {', '.join(CLASSIFIERS)}")
    cfg.validate()
    return cfg


def _half(n: int) -> int:
    return (n - 1) // 2 + 1  # output size of a 3x3 convolution with stride 2 and padding 1


class GarmentClassifier(nn.Module):
    """conv 3x3/2 -> ReLU -> conv 3x3/2 -> ReLU -> linear (the features) -> ReLU -> linear (the classes)."""

    def __init__(self, cfg: ClassifierConfig, image_shape, classes: int = 10):
        super().__init__()
        c, h, w = (int(s) for s in image_shape)
        w1, w2 = (int(v) for v in cfg.widths)
        self.conv1 = nn.Conv2d(c, w1, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(w1, w2, 3, stride=2, padding=1)
        self.fc = nn.Linear(w2 * _half(_half(h)) * _half(_half(w)), cfg.features)
        self.head = nn.Linear(cfg.features, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The feature layer before its ReLU: every unit informative (a unit the ReLU silences on
        every image would otherwise leave the Frechet distance a zero dimension)."""
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(x.flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.features(x)))


@dataclass
class TrainedClassifier:
    """A trained classifier (eval mode, frozen) with its manifest and folder."""

    net: GarmentClassifier
    manifest: dict
    path: Path | None = None

    @torch.no_grad()
    def embed(self, images: torch.Tensor, batch: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
        """(features (n, F), confidence (n,)), float64: the feature layer and the max-softmax
        probability of each image, clipped to the [0, 1] pixel range first (a sample may overshoot)."""
        feats, conf = [], []
        for lo in range(0, len(images), batch):
            x = torch.as_tensor(images[lo:lo + batch]).float().clamp(0, 1)
            f = self.net.features(x)
            feats.append(f.double())
            conf.append(torch.softmax(self.net.head(torch.relu(f)).double(), -1).amax(-1))
        return torch.cat(feats), torch.cat(conf)

    def summary(self) -> dict:
        """What results.json records of the classifier: its identity, size, accuracy and cost."""
        m = self.manifest
        return {"name": m["name"], "weights_sha256": m["weights"]["sha256"], "config": m["request"]["config"],
                "features": m["request"]["config"]["features"], "train_images": m["data"]["train_images"],
                "held_out_images": m["data"]["held_out_images"], "accuracy": m["accuracy"],
                "train_seconds": m["timing_s"]}


# -- data ------------------------------------------------------------------------------------------
def has_labels(pool: Pool) -> bool:
    """Whether the pool's source carries class labels gahb can read (Fashion-MNIST's IDX label files)."""
    return pool.manifest.get("source", {}).get("kind") == "fashion-mnist"


def pool_labels(pool: Pool) -> np.ndarray:
    """The class of every pool row, int64 (P,): the IDX label files beside the image files, in the
    source order the pool was read in, indexed by the pool's ``source_index.npy`` (the images dedup kept)."""
    from gahb.data.readers.idx import read_idx

    if not has_labels(pool):
        raise ValueError(f"the pool {pool.path} ({pool.manifest.get('spec')}) has no class labels; the "
                         "sample-quality classifier needs Fashion-MNIST's")
    folder = Path(pool.manifest["source"]["path"])
    parts = []
    for name in pool.manifest["preprocessing"]["files"]:
        stem = name.replace("images-idx3-ubyte", "labels-idx1-ubyte")
        path = next((p for p in (folder / stem, folder / stem.removesuffix(".gz")) if p.is_file()), None)
        if path is None:
            raise FileNotFoundError(f"{folder} has no label file {stem} beside {name}")
        arr = read_idx(path)
        if arr.dtype != np.uint8 or arr.ndim != 1:
            raise ValueError(f"{path}: expected a uint8 label file (magic 0x00000801)")
        parts.append(arr)
    labels = np.concatenate(parts).astype(np.int64)
    if len(labels) != pool.manifest["source"]["n_images"]:
        raise ValueError(f"{len(labels)} labels for {pool.manifest['source']['n_images']} source images")
    return labels[np.load(pool.path / "source_index.npy", allow_pickle=False)]


def held_out_rows(split: PoolSplit) -> np.ndarray:
    """Pool rows the classifier never sees: the test set and the first ``n_test`` images of half 1
    (the real images of the floor, :func:`gahb.analysis.quality.quality_references`)."""
    return np.concatenate([split.test, split.half1[: split.n_test]])


def training_rows(pool_size: int, split: PoolSplit, cfg: ClassifierConfig) -> np.ndarray:
    """The pool rows the classifier trains on, ascending: all but :func:`held_out_rows`, or a seeded subset."""
    keep = np.ones(pool_size, dtype=bool)
    keep[held_out_rows(split)] = False
    rows = np.nonzero(keep)[0].astype(np.int64)
    if cfg.train_images is not None and cfg.train_images < len(rows):
        rows = np.sort(rows[seeded_permutation(len(rows), cfg.seed)[: cfg.train_images]])
    return rows


def _sha(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr).data).hexdigest()


# -- training --------------------------------------------------------------------------------------
def train_classifier(images: torch.Tensor, labels: torch.Tensor, cfg: ClassifierConfig,
                     classes: int = 10) -> GarmentClassifier:
    """Train a :class:`GarmentClassifier` on float (n, C, H, W) ``images`` in [0, 1] (or uint8 /
    255) and int64 ``labels``: deterministic for a given ``cfg`` (module docstring), eval mode."""
    cfg.validate()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            net = GarmentClassifier(cfg, images.shape[1:], classes)
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
        g = torch.Generator().manual_seed(cfg.seed)
        n = len(images)
        per_epoch = max(1, n // cfg.batch_size)  # the last partial batch of each epoch is dropped
        total, step = cfg.epochs * per_epoch, 0
        net.train()
        for _ in range(cfg.epochs):
            order = torch.randperm(n, generator=g)
            for i in range(per_epoch):
                idx = order[i * cfg.batch_size:(i + 1) * cfg.batch_size]
                for group in opt.param_groups:
                    group["lr"] = cfg.lr * 0.5 * (1 + np.cos(np.pi * step / total))
                x = images[idx]
                x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
                loss = nn.functional.cross_entropy(net(x), labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
    finally:
        torch.set_num_threads(threads)
    return net.eval().requires_grad_(False)


@torch.no_grad()
def accuracy(net: GarmentClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    return float((net(x).argmax(-1) == labels).double().mean())


# -- the cache -------------------------------------------------------------------------------------
def classifier_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """``<cache_dir>/classifiers`` (a study's dataset root), ``$GAHB_CACHE/classifiers`` or
    ``~/.cache/gahb/classifiers``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser() / "classifiers"
    env = os.environ.get("GAHB_CACHE")
    return (Path(env).expanduser() if env else Path.home() / ".cache" / "gahb") / "classifiers"


def _request(pool: Pool, labels: np.ndarray, split: PoolSplit, cfg: ClassifierConfig) -> dict:
    """What a cached classifier must have been built from to be reused."""
    return {"format_version": FORMAT_VERSION, "config": json.loads(json.dumps(asdict(cfg))),
            "architecture": "conv3x3/2-relu-conv3x3/2-relu-fc-relu(features)-fc",
            "image_shape": list(pool.image_shape), "pool_sha256": pool.sha256, "labels_sha256": _sha(labels),
            "held_out": {"split_method": SPLIT_METHOD, "seed": split.seed, "n_test": split.n_test,
                         "rows": "test + half1[:n_test]"}}


def _load(path: Path, request: dict) -> TrainedClassifier | None:
    """The cached classifier in ``path`` when its manifest records ``request`` and its weights their hash."""
    from safetensors.torch import load_file

    try:
        manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
        if manifest.get("request") != request:
            return None
        weights = path / manifest["weights"]["file"]
        if file_sha256(weights) != manifest["weights"]["sha256"]:
            return None
        cfg = ClassifierConfig(**{**request["config"], "widths": tuple(request["config"]["widths"])})
        net = GarmentClassifier(cfg, request["image_shape"], manifest["data"]["classes"])
        net.load_state_dict(load_file(weights))  # safetensors: tensors only, no pickle
    except (OSError, ValueError, KeyError, RuntimeError):
        return None
    return TrainedClassifier(net.eval().requires_grad_(False), manifest, path)


def load_classifier(pool: Pool, *, seed: int = 0, n_test: int | None = None, config="standard",
                    cache_dir: str | os.PathLike | None = None, force: bool = False,
                    progress: bool = True) -> TrainedClassifier:
    """The classifier of ``pool`` for the split (``seed``, ``n_test``), trained once and cached
    (module docstring); ``config`` is a preset name of :data:`CLASSIFIERS` or a ClassifierConfig."""
    from safetensors.torch import save_file

    cfg = classifier_config(config)
    labels = pool_labels(pool)
    split = split_pool(len(pool), seed, n_test)
    request = _request(pool, labels, split, cfg)
    digest = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()[:8]
    name = f"{pool.manifest['source']['kind']}-w{'x'.join(str(w) for w in cfg.widths)}-f{cfg.features}-{digest}"
    out = classifier_root(cache_dir) / name
    if not force and (hit := _load(out, request)) is not None:
        return hit
    out.mkdir(parents=True, exist_ok=True)
    with _dir_lock(out):  # a second process waits, then reuses the first one's classifier
        if not force and (hit := _load(out, request)) is not None:
            return hit
        if (out / "manifest.json").exists():
            (out / "manifest.json").unlink()  # incomplete until the new manifest lands
        rows = training_rows(len(pool), split, cfg)
        x = torch.from_numpy(np.ascontiguousarray(pool.raw[rows]))
        x = x if pool.raw.dtype == np.uint8 else pool.get(rows)
        y = torch.from_numpy(labels[rows])
        classes = int(labels.max()) + 1
        if progress:
            print(f"[quality] training the {name} classifier on {len(rows)} images", flush=True)
        t0, c0 = time.perf_counter(), time.process_time()
        net = train_classifier(x, y, cfg, classes)
        timing = {"wall": round(time.perf_counter() - t0, 2), "cpu": round(time.process_time() - c0, 2),
                  "threads": 1}
        test_x = pool.get(split.test)
        acc = {"held_out_test": accuracy(net, test_x, torch.from_numpy(labels[split.test])),
               "floor_images": accuracy(net, pool.get(split.half1[: split.n_test]),
                                        torch.from_numpy(labels[split.half1[: split.n_test]])),
               "training_images": accuracy(net, x[:1000], y[:1000])}
        state = {k: v.contiguous() for k, v in net.state_dict().items()}
        _atomic(out / WEIGHTS_NAME, lambda tmp: save_file(state, tmp))
        manifest = {"format": "gahb-classifier", "name": name, "request": request,
                    "weights": {"file": WEIGHTS_NAME, "sha256": file_sha256(out / WEIGHTS_NAME)},
                    "data": {"train_images": int(len(rows)), "train_rows_sha256": _sha(rows),
                             "held_out_images": int(len(held_out_rows(split))), "classes": classes},
                    "accuracy": {k: round(v, 4) for k, v in acc.items()}, "timing_s": timing,
                    "torch": torch.__version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        atomic_write_json(out / "manifest.json", manifest)
        if progress:
            print(f"[quality] held-out accuracy {acc['held_out_test']:.3f}, {timing['cpu']:.0f} s CPU", flush=True)
    return TrainedClassifier(net, manifest, out)


__all__ = ["CLASSIFIERS", "ClassifierConfig", "GarmentClassifier", "MAX_FEATURES", "TrainedClassifier",
           "classifier_config", "classifier_root", "has_labels", "held_out_rows", "load_classifier",
           "pool_labels", "train_classifier", "training_rows"]
