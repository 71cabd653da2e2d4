"""Synthetic training pairs ``(z ~ p(z), c = f(G(z)))`` for TR0N's translator: made on the fly, or cached on disk.

A cache is one folder::

    manifest.json             what the cache holds and how it was made (tensors, generator/encoder identity, prior,
                              seed of every shard); ``"complete": true`` once every shard is written
    shard-00000.safetensors   ``conditions`` (n, condition_dim) and ``latents`` (n, total_latent_dim), packed as the
    shard-00001.safetensors   generator packs them (main latent first, then the auxiliary latents)
    ...

Shard ``i`` is drawn from a generator seeded by ``(seed, i)`` alone, so the cache is the same whatever the number of
processes that write it (each process writes a disjoint set of shards). Shards are written under a temporary name and
renamed, and carry a SHA-256 of their data in their header: a half-written or corrupted shard is never read as data.
"""

import hashlib
import importlib
import json
import mmap
import os
import struct
import time
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from accelerate.utils import gather_object
from safetensors.torch import save_file
from tqdm.auto import tqdm

from ..encoders import EncoderAdapter
from ..models.generator import TronGenerator
from ..pipelines.pipeline_tron import TronPipeline
from ..pretrained import resolve_pretrained_path
from ..schedulers import LangevinScheduler

MANIFEST_NAME = "manifest.json"
CACHE_FORMAT = "tron-pairs"
CACHE_FORMAT_VERSION = 1
TENSOR_NAMES = ("conditions", "latents")
CACHE_DTYPES = {"float32": (torch.float32, np.float32, "F32"), "float16": (torch.float16, np.float16, "F16")}

# Independent random streams, all derived from one user seed (see `derive_seed`).
SHARD_STREAM = 0  # pairs of cache shard i
VALIDATION_STREAM = 1  # held-out validation pairs
ONLINE_STREAM = 2  # on-the-fly training pairs, chunk i
NOISE_STREAM = 3  # condition noise of training micro-batch i
SHUFFLE_STREAM = 4  # order of the cache in epoch i
ENERGY_STREAM = 5  # translator draws scored by the validation energy

ConditionFn = Callable[[torch.Tensor, EncoderAdapter], torch.Tensor]


class PairCacheError(ValueError):
    """A pair cache that cannot be used: missing, incomplete, corrupted, or made by other models or settings."""


def derive_seed(seed: int, stream: int, index: int) -> int:
    """A 63-bit seed for item ``index`` of random ``stream``, independent of how the work is split over processes."""
    words = np.random.SeedSequence([seed, stream, index]).generate_state(2, dtype=np.uint32)
    return ((int(words[0]) << 32) | int(words[1])) & (2**63 - 1)


def module_fingerprint(module: torch.nn.Module) -> str:
    """Short SHA-256 of a module's class and state dict: tells two sets of weights apart, whatever their config says."""
    digest = hashlib.sha256(f"{type(module).__module__}.{type(module).__qualname__}".encode())
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:16]


def load_condition_fn(spec: str) -> ConditionFn:
    """Import ``"package.module:function"``, a condition function ``fn(images, adapter) -> (B, condition_dim)``."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"`--condition_fn` must look like 'package.module:function', got {spec!r}.")
    try:
        function = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"`--condition_fn` {spec!r} could not be imported: {error}") from error
    if not callable(function):
        raise ValueError(f"`--condition_fn` {spec!r} is not callable.")
    return function


def load_training_pipeline(pretrained_pipeline: str | os.PathLike, **kwargs) -> TronPipeline:
    """Load the generator, encoder and the other components of a saved `TronPipeline`, without its translator.

    ``pretrained_pipeline`` is a local folder, an embedded pipeline name or a Hub repo id. The folder may have no
    translator (or one of other dimensions): training builds its own. Raises ``ValueError`` naming ``--pipeline`` when
    the folder has no generator or no encoder. Other keyword arguments go to `TronPipeline.from_pretrained`.
    """
    path = resolve_pretrained_path(pretrained_pipeline)
    if not os.path.isdir(path):
        try:
            path = TronPipeline.download(str(path), **kwargs)
        except Exception as error:
            raise ValueError(
                f"`--pipeline` {str(pretrained_pipeline)!r} is not a local folder or an embedded pipeline, and it could "
                f"not be downloaded from the Hub ({type(error).__name__}: {error})."
            ) from error
    index_path = Path(path) / "model_index.json"
    if not index_path.is_file():
        raise ValueError(f"`--pipeline` {str(path)!r} is not a pipeline folder: it has no model_index.json.")
    index = json.loads(index_path.read_text())
    for name in ("generator", "encoder"):
        entry = index.get(name)
        if not entry or entry[0] is None or not (Path(path) / name).is_dir():
            raise ValueError(
                f"`--pipeline` {str(path)!r} has no {name}: training a translator needs the pipeline's generator and "
                f"encoder (model_index.json entry {name!r}: {entry!r}; folder {name}/ "
                f"{'exists' if (Path(path) / name).is_dir() else 'missing'})."
            )
    overrides = {"translator": None}
    if not index.get("scheduler") or index["scheduler"][0] is None:
        # Training never uses the scheduler; the saved pipeline still needs one.
        overrides["scheduler"] = LangevinScheduler()
    pipeline = TronPipeline.from_pretrained(path, **overrides, **kwargs)
    pipeline.set_progress_bar_config(disable=True)
    if not isinstance(pipeline.generator, TronGenerator):
        raise ValueError(f"`--pipeline` {str(path)!r}: its generator is a {type(pipeline.generator).__name__}, not a TronGenerator.")
    return pipeline


class PairSource:
    """Makes synthetic pairs from a frozen generator G and encoder f.

    Latents come from the generator's own prior (`TronGenerator.sample_latents`: clipped or truncated normals, and
    whatever auxiliary latents the generator draws, e.g. BigGAN's class embedding). The condition of a pair is
    ``adapter.encode_generated(G(z))`` (CLIP image embedding or classifier probabilities), or
    ``condition_fn(G(z), adapter)`` for other routes, e.g. the caption route ``c = text_encoder(caption(G(z)))``.

    Args:
        generator: The frozen generator.
        adapter: The frozen encoder, wrapped.
        condition_fn: Optional ``fn(images (B, C, H, W) in [-1, 1], adapter) -> conditions (B, condition_dim)``.
        condition_name: Name of the condition route, stored in cache manifests (defaults to ``"encode_generated"``,
            or the function's qualified name).
    """

    def __init__(
        self,
        generator: TronGenerator,
        adapter: EncoderAdapter,
        condition_fn: ConditionFn | None = None,
        condition_name: str | None = None,
    ):
        self.generator = generator
        self.adapter = adapter
        self.condition_fn = condition_fn
        if condition_name is None:
            condition_name = (
                "encode_generated" if condition_fn is None else f"{condition_fn.__module__}.{condition_fn.__qualname__}"
            )
        self.condition_name = condition_name
        self._identity = None

    @classmethod
    def from_pipeline(cls, pipeline: TronPipeline, condition_fn: ConditionFn | None = None, condition_name: str | None = None):
        return cls(pipeline.generator, pipeline.encoder_adapter, condition_fn, condition_name)

    @property
    def device(self) -> torch.device:
        return self.generator.device

    @property
    def condition_dim(self) -> int:
        return self.adapter.condition_dim

    @property
    def latent_specs(self) -> list[dict]:
        return [
            {"name": spec.name, "dim": spec.dim, "prior": spec.prior, "threshold": spec.threshold}
            for spec in self.generator.latent_specs
        ]

    def identity(self) -> dict:
        """What makes pairs of this source differ from another's: models (weights included), prior and route."""
        if self._identity is None:
            adapter = self.adapter
            self._identity = {
                "generator": {
                    "class": f"{type(self.generator).__module__}.{type(self.generator).__qualname__}",
                    "fingerprint": module_fingerprint(self.generator),
                },
                "encoder": {
                    "class": f"{type(adapter.encoder).__module__}.{type(adapter.encoder).__qualname__}",
                    "fingerprint": module_fingerprint(adapter.encoder),
                    "kind": adapter.kind,
                    "image_size": adapter.image_size,
                    "image_mean": list(adapter.image_mean),
                    "image_std": list(adapter.image_std),
                },
                "condition": {"route": self.condition_name, "dim": adapter.condition_dim},
                "latent_specs": self.latent_specs,
            }
        return self._identity

    @torch.no_grad()
    def make_pairs(self, num_pairs: int, seed: int, batch_size: int = 64, autocast=None) -> dict[str, torch.Tensor]:
        """``num_pairs`` pairs drawn from one generator seeded with ``seed``, in batches of ``batch_size``.

        Returns float32 tensors on the generator's device: ``latents`` ``(num_pairs, total_latent_dim)`` (packed) and
        ``conditions`` ``(num_pairs, condition_dim)``. ``autocast`` is an optional context manager factory (e.g.
        ``accelerator.autocast``) that G and f run under.
        """
        device = self.device
        generator = torch.Generator(device).manual_seed(seed)
        latents, conditions = [], []
        for start in range(0, num_pairs, batch_size):
            count = min(batch_size, num_pairs - start)
            batch_latents = self.generator.sample_latents(count, generator=generator, device=device)
            with autocast() if autocast is not None else nullcontext():
                images = self.generator.generate(batch_latents)
                if self.condition_fn is None:
                    batch_conditions = self.adapter.encode_generated(images)
                else:
                    batch_conditions = self.condition_fn(images, self.adapter)
            if batch_conditions.ndim != 2 or batch_conditions.shape != (count, self.adapter.condition_dim):
                raise ValueError(
                    f"The condition route {self.condition_name!r} returned shape {tuple(batch_conditions.shape)} for "
                    f"{count} images; expected ({count}, {self.adapter.condition_dim}), the encoder's condition size, so "
                    "that the trained translator fits the pipeline."
                )
            latents.append(batch_latents.float())
            conditions.append(batch_conditions.float())
        return {"latents": torch.cat(latents), "conditions": torch.cat(conditions)}


# Cache files ---------------------------------------------------------------------------------------------------
def shard_file_name(index: int) -> str:
    return f"shard-{index:05d}.safetensors"


def _tensors_digest(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(arrays):
        digest.update(np.ascontiguousarray(arrays[name]))
    return digest.hexdigest()


def _read_header(path: Path) -> tuple[dict, int]:
    """The safetensors header of ``path`` and the offset where its data starts; ``ValueError`` if unreadable."""
    size = path.stat().st_size
    with open(path, "rb") as file:
        prefix = file.read(8)
        if len(prefix) < 8:
            raise ValueError(f"only {size} bytes long")
        (header_size,) = struct.unpack("<Q", prefix)
        if header_size > size - 8:
            raise ValueError(f"header of {header_size} bytes announced, only {size - 8} bytes follow")
        try:
            header = json.loads(file.read(header_size))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"unreadable header ({error})") from error
    return header, 8 + header_size


def _file_digest(path: Path, header: dict, data_start: int, chunk_bytes: int = 16 << 20) -> str:
    # Plain reads, not a mapping: checking a cache does not grow the process's resident memory.
    digest = hashlib.sha256()
    buffer = bytearray(chunk_bytes)
    with open(path, "rb") as file:
        for name in sorted(k for k in header if k != "__metadata__"):
            begin, end = header[name]["data_offsets"]
            file.seek(data_start + begin)
            remaining = end - begin
            while remaining:
                count = file.readinto(memoryview(buffer)[: min(chunk_bytes, remaining)])
                if not count:
                    raise ValueError("file ends inside its data")
                digest.update(memoryview(buffer)[:count])
                remaining -= count
    return digest.hexdigest()


def check_shard(path: Path, shard: dict, manifest: dict, verify_checksum: bool = True) -> str | None:
    """Why shard file ``path`` cannot be used as entry ``shard`` of ``manifest``, or ``None`` when it can.

    Checks the header (shapes, dtypes, offsets that fill the file exactly, shard index and seed) and, when
    ``verify_checksum``, the SHA-256 of the data.
    """
    if not path.is_file():
        return "missing"
    try:
        header, data_start = _read_header(path)
    except ValueError as error:
        return f"truncated or not a safetensors file: {error}"
    metadata = header.get("__metadata__") or {}
    if metadata.get("shard_index") != str(shard["index"]) or metadata.get("seed") != str(shard["seed"]):
        return f"written as shard {metadata.get('shard_index')} with seed {metadata.get('seed')}, expected {shard['index']} / {shard['seed']}"
    end = 0
    for name in TENSOR_NAMES:
        spec = manifest["tensors"][name]
        info = header.get(name)
        expected_shape = [shard["num_pairs"], spec["shape"][1]]
        if info is None:
            return f"has no tensor {name!r}"
        if info["shape"] != expected_shape or info["dtype"] != CACHE_DTYPES[spec["dtype"]][2]:
            return f"tensor {name!r} is {info['dtype']} {info['shape']}, expected {CACHE_DTYPES[spec['dtype']][2]} {expected_shape}"
        end = max(end, info["data_offsets"][1])
    if data_start + end != path.stat().st_size:
        return f"{path.stat().st_size} bytes on disk, the header describes {data_start + end} (truncated or padded)"
    if verify_checksum:
        try:
            digest = _file_digest(path, header, data_start)
        except ValueError as error:
            return str(error)
        if digest != metadata.get("sha256"):
            return "data checksum mismatch (corrupted)"
    return None


def _write_shard(path: Path, pairs: dict[str, torch.Tensor], shard: dict, dtype: str) -> None:
    arrays = {name: pairs[name].detach().to("cpu", CACHE_DTYPES[dtype][0]).contiguous() for name in TENSOR_NAMES}
    metadata = {
        "shard_index": str(shard["index"]),
        "seed": str(shard["seed"]),
        "sha256": _tensors_digest({name: tensor.numpy() for name, tensor in arrays.items()}),
    }
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(arrays, str(temporary), metadata=metadata)
    with open(temporary, "rb+") as file:
        os.fsync(file.fileno())
    # Atomic on POSIX: readers see either no shard or a whole one.
    os.replace(temporary, path)


def _write_json_atomic(path: Path, data: dict) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(temporary, path)


def read_manifest(pairs_dir: str | os.PathLike) -> dict | None:
    """The manifest of the cache in ``pairs_dir``, or ``None`` when there is none."""
    path = Path(pairs_dir) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise PairCacheError(f"`--pairs_dir` {str(pairs_dir)!r}: {MANIFEST_NAME} is not valid JSON ({error}).") from error
    if manifest.get("format") != CACHE_FORMAT:
        raise PairCacheError(f"`--pairs_dir` {str(pairs_dir)!r} does not hold a {CACHE_FORMAT} cache ({MANIFEST_NAME} format {manifest.get('format')!r}).")
    return manifest


def build_manifest(
    source: PairSource, num_pairs: int, pairs_per_shard: int, seed: int, generation_batch_size: int, dtype: str
) -> dict:
    """The manifest of a cache of ``num_pairs`` pairs of ``source``, before any shard is written."""
    num_shards = -(-num_pairs // pairs_per_shard)
    shards = [
        {
            "file": shard_file_name(index),
            "index": index,
            "num_pairs": min(pairs_per_shard, num_pairs - index * pairs_per_shard),
            "seed": derive_seed(seed, SHARD_STREAM, index),
        }
        for index in range(num_shards)
    ]
    return {
        "format": CACHE_FORMAT,
        "format_version": CACHE_FORMAT_VERSION,
        "num_pairs": num_pairs,
        "pairs_per_shard": pairs_per_shard,
        "num_shards": num_shards,
        "seed": seed,
        "generation_batch_size": generation_batch_size,
        "tensors": {
            "conditions": {"shape": [num_pairs, source.condition_dim], "dtype": dtype},
            "latents": {"shape": [num_pairs, sum(spec["dim"] for spec in source.latent_specs)], "dtype": dtype},
        },
        **source.identity(),
        "shards": shards,
        "complete": False,
    }


IDENTITY_KEYS = ("generator", "encoder", "condition", "latent_specs")
SETTING_KEYS = ("num_pairs", "pairs_per_shard", "seed", "generation_batch_size", "tensors")


def manifest_mismatches(manifest: dict, expected: dict, keys=IDENTITY_KEYS + SETTING_KEYS) -> list[str]:
    """Human-readable differences between a cache's manifest and what was asked for."""
    return [f"{key}: cache has {manifest.get(key)!r}, requested {expected.get(key)!r}" for key in keys if manifest.get(key) != expected.get(key)]


def check_cache_matches(manifest: dict, source: PairSource, pairs_dir) -> None:
    """Raise `PairCacheError` when the cache in ``pairs_dir`` was made by another generator, encoder or route."""
    differences = manifest_mismatches(manifest, source.identity(), IDENTITY_KEYS)
    if differences:
        raise PairCacheError(
            f"`--pairs_dir` {str(pairs_dir)!r} was made with other models or settings than the `--pipeline` given:\n  "
            + "\n  ".join(differences)
            + "\nUse the pipeline that made the cache, or another `--pairs_dir`."
        )


def generate_pairs(
    source: PairSource | TronPipeline,
    pairs_dir: str | os.PathLike,
    num_pairs: int,
    pairs_per_shard: int = 65536,
    seed: int = 0,
    generation_batch_size: int = 64,
    dtype: str = "float32",
    accelerator=None,
    show_progress: bool = True,
) -> "PairCache":
    """Write (or finish writing) a cache of ``num_pairs`` synthetic pairs in ``pairs_dir`` and open it.

    Resumable: shards already on disk and intact are kept, half-written or corrupted ones are regenerated (with a
    warning), and the rest are written. Under `accelerate launch` every process writes the shards ``i`` with
    ``i % num_processes == process_index``; since shard ``i`` depends only on ``(seed, i)``, the cache does not
    depend on the number of processes. Raises `PairCacheError` if ``pairs_dir`` holds a cache made with other
    models or settings.

    Args:
        source: A `PairSource`, or a pipeline whose generator and encoder make the pairs.
        pairs_dir: Folder of the cache (created if needed).
        num_pairs: Number of pairs.
        pairs_per_shard: Pairs per shard file (the last shard may hold fewer).
        seed: Seed of the whole cache.
        generation_batch_size: Images rendered and encoded at once (part of the cache's identity: draws depend on it).
        dtype: ``"float32"`` or ``"float16"``, the storage type of conditions and latents.
        accelerator: An `accelerate.Accelerator` to split the work over processes (and run G and f under its mixed
            precision); ``None`` for one process.
        show_progress: Show a progress bar (on the main process only).
    """
    if isinstance(source, TronPipeline):
        source = PairSource.from_pipeline(source)
    for name, value in (("num_pairs", num_pairs), ("pairs_per_shard", pairs_per_shard), ("generation_batch_size", generation_batch_size)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"`seed` must be a non-negative integer, got {seed!r}.")
    if dtype not in CACHE_DTYPES:
        raise ValueError(f"`dtype` must be one of {sorted(CACHE_DTYPES)}, got {dtype!r}.")
    pairs_dir = Path(pairs_dir)
    process_index = accelerator.process_index if accelerator is not None else 0
    num_processes = accelerator.num_processes if accelerator is not None else 1
    is_main = process_index == 0
    wait = accelerator.wait_for_everyone if accelerator is not None else (lambda: None)

    expected = build_manifest(source, num_pairs, pairs_per_shard, seed, generation_batch_size, dtype)
    existing = read_manifest(pairs_dir)
    if existing is not None:
        differences = manifest_mismatches(existing, expected)
        if differences:
            raise PairCacheError(
                f"`--pairs_dir` {str(pairs_dir)!r} holds a cache made with other models or settings:\n  "
                + "\n  ".join(differences)
                + "\nUse another `--pairs_dir`, or repeat the arguments that made this cache to finish it."
            )
    elif pairs_dir.is_dir() and any(pairs_dir.iterdir()):
        raise PairCacheError(f"`--pairs_dir` {str(pairs_dir)!r} is not empty and holds no {MANIFEST_NAME}; choose an empty or new folder.")
    # Every process has checked the folder before the main process writes to it.
    wait()
    if is_main:
        pairs_dir.mkdir(parents=True, exist_ok=True)
        _write_json_atomic(pairs_dir / MANIFEST_NAME, expected)
    wait()

    own_shards = expected["shards"][process_index::num_processes]
    autocast = accelerator.autocast if accelerator is not None else None
    generated = 0
    start_time = time.perf_counter()
    progress = tqdm(
        total=sum(shard["num_pairs"] for shard in own_shards),
        desc=f"Generating pairs (process {process_index + 1}/{num_processes})" if num_processes > 1 else "Generating pairs",
        unit="pair",
        disable=not (show_progress and is_main),
    )
    for shard in own_shards:
        path = pairs_dir / shard["file"]
        for leftover in pairs_dir.glob(f".{shard['file']}.*.tmp"):
            leftover.unlink(missing_ok=True)  # written by a process that was killed mid-shard
        if path.exists():
            problem = check_shard(path, shard, expected)
            if problem is None:
                progress.update(shard["num_pairs"])
                continue
            warnings.warn(f"Pair cache shard {path} is unusable ({problem}); generating it again.", stacklevel=2)
        pairs = source.make_pairs(shard["num_pairs"], shard["seed"], generation_batch_size, autocast=autocast)
        _write_shard(path, pairs, shard, dtype)
        generated += shard["num_pairs"]
        progress.update(shard["num_pairs"])
    progress.close()
    elapsed = time.perf_counter() - start_time
    counts = [(generated, elapsed)]
    if accelerator is not None and num_processes > 1:
        counts = gather_object(counts)

    if is_main:
        missing = [shard["file"] for shard in expected["shards"] if check_shard(pairs_dir / shard["file"], shard, expected, verify_checksum=False)]
        if missing:
            raise PairCacheError(f"Pair cache {str(pairs_dir)!r}: shards {missing} are missing after generation.")
        _write_json_atomic(pairs_dir / MANIFEST_NAME, {**expected, "complete": True})
        total_generated, slowest = sum(count for count, _ in counts), max(seconds for _, seconds in counts)
        if total_generated:
            print(
                f"Generated {total_generated} pairs in {slowest:.1f}s with {num_processes} process(es): "
                f"{total_generated / max(slowest, 1e-9):.1f} pairs/s."
            )
    wait()
    # Every shard was either verified or written during this call.
    return PairCache(pairs_dir, verify_checksums=False)


class PairCache(torch.utils.data.Dataset):
    """A pair cache written by `generate_pairs`, read through memory maps (never loaded into RAM).

    ``cache[i]`` is one pair and ``cache[indices]`` (a list, array or tensor of indices) a batch: a dict with float32
    ``conditions`` ``(B, condition_dim)`` and ``latents`` ``(B, total_latent_dim)``. Only the rows asked for are read.

    Args:
        pairs_dir: Folder of the cache.
        verify_checksums: Check the SHA-256 of every shard on opening (one sequential read of the cache, with plain
            reads that do not grow resident memory). Headers, shapes and file sizes are always checked.

    Raises:
        PairCacheError: The folder holds no cache, the cache is incomplete, or a shard is missing, truncated or
            corrupted (with the shard's name and what is wrong).
    """

    def __init__(self, pairs_dir: str | os.PathLike, verify_checksums: bool = True):
        self.pairs_dir = Path(pairs_dir)
        manifest = read_manifest(self.pairs_dir)
        if manifest is None:
            raise PairCacheError(f"`--pairs_dir` {str(pairs_dir)!r} holds no pair cache ({MANIFEST_NAME} not found).")
        if not manifest.get("complete"):
            raise PairCacheError(
                f"The pair cache in {str(pairs_dir)!r} is incomplete (generation was interrupted): run `tron generate-pairs` "
                "again with the same arguments to finish it."
            )
        for shard in manifest["shards"]:
            problem = check_shard(self.pairs_dir / shard["file"], shard, manifest, verify_checksum=verify_checksums)
            if problem is not None:
                raise PairCacheError(
                    f"Pair cache shard {str(self.pairs_dir / shard['file'])!r} is unusable: {problem}. Run `tron "
                    "generate-pairs` again with the same arguments to regenerate it."
                )
        self.manifest = manifest
        self._shard_starts = np.cumsum([0] + [shard["num_pairs"] for shard in manifest["shards"]])
        self._maps = None

    def __getstate__(self):
        # Memory maps would be pickled as full copies; worker processes map the files again.
        return {**self.__dict__, "_maps": None}

    @property
    def num_pairs(self) -> int:
        return self.manifest["num_pairs"]

    @property
    def condition_dim(self) -> int:
        return self.manifest["tensors"]["conditions"]["shape"][1]

    @property
    def latent_specs(self) -> list[dict]:
        return self.manifest["latent_specs"]

    def __len__(self) -> int:
        return self.num_pairs

    def _shard_maps(self) -> list[dict[str, np.ndarray]]:
        if self._maps is None:
            maps = []
            for shard in self.manifest["shards"]:
                path = self.pairs_dir / shard["file"]
                header, data_start = _read_header(path)
                with open(path, "rb") as file:
                    mapping = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
                if hasattr(mapping, "madvise"):
                    # Batches are random rows: no readahead, which would read (and map) whole neighbourhoods.
                    mapping.madvise(mmap.MADV_RANDOM)
                arrays = {}
                for name in TENSOR_NAMES:
                    rows, dim = header[name]["shape"]
                    arrays[name] = np.frombuffer(
                        mapping,
                        dtype=CACHE_DTYPES[self.manifest["tensors"][name]["dtype"]][1],
                        count=rows * dim,
                        offset=data_start + header[name]["data_offsets"][0],
                    ).reshape(rows, dim)
                maps.append(arrays)
            self._maps = maps
        return self._maps

    def __getitem__(self, index) -> dict[str, torch.Tensor]:
        single = isinstance(index, (int, np.integer)) or (isinstance(index, torch.Tensor) and index.ndim == 0)
        indices = np.atleast_1d(np.asarray(index.cpu() if isinstance(index, torch.Tensor) else index, dtype=np.int64))
        if indices.size and (indices.min() < -self.num_pairs or indices.max() >= self.num_pairs):
            raise IndexError(f"Pair index out of range for a cache of {self.num_pairs} pairs.")
        indices = indices % self.num_pairs
        shard_ids = np.searchsorted(self._shard_starts, indices, side="right") - 1
        maps = self._shard_maps()
        batch = {
            name: np.empty((indices.size, self.manifest["tensors"][name]["shape"][1]), dtype=np.float32) for name in TENSOR_NAMES
        }
        for shard_id in np.unique(shard_ids):
            rows = np.nonzero(shard_ids == shard_id)[0]
            local = indices[rows] - self._shard_starts[shard_id]
            order = np.argsort(local, kind="stable")  # ascending reads touch each page once
            for name in TENSOR_NAMES:
                batch[name][rows[order]] = maps[shard_id][name][local[order]]
        tensors = {name: torch.from_numpy(array) for name, array in batch.items()}
        return {name: tensor[0] for name, tensor in tensors.items()} if single else tensors

    def iter_chunks(self, name: str, chunk_size: int = 65536):
        """Yield tensor ``name`` (``"conditions"`` or ``"latents"``) in order, ``(<= chunk_size, dim)`` float32 chunks,
        with plain file reads (a full pass does not grow resident memory)."""
        if name not in TENSOR_NAMES:
            raise ValueError(f"`name` must be one of {TENSOR_NAMES}, got {name!r}.")
        numpy_dtype = CACHE_DTYPES[self.manifest["tensors"][name]["dtype"]][1]
        dim = self.manifest["tensors"][name]["shape"][1]
        row_bytes = dim * np.dtype(numpy_dtype).itemsize
        for shard in self.manifest["shards"]:
            path = self.pairs_dir / shard["file"]
            header, data_start = _read_header(path)
            with open(path, "rb") as file:
                file.seek(data_start + header[name]["data_offsets"][0])
                for start in range(0, shard["num_pairs"], chunk_size):
                    rows = min(chunk_size, shard["num_pairs"] - start)
                    array = np.fromfile(file, dtype=numpy_dtype, count=rows * dim).reshape(rows, dim)
                    if array.nbytes != rows * row_bytes:
                        raise PairCacheError(f"Pair cache shard {str(path)!r} ends early.")
                    yield torch.from_numpy(array.astype(np.float32, copy=False))


def open_pair_cache(pairs_dir: str | os.PathLike, verify_checksums: bool = True, accelerator=None) -> PairCache:
    """Open a cache, the checksum verification split over the processes of ``accelerator`` (each hashes the shards
    ``i % num_processes == process_index``); every process raises the same `PairCacheError` if a shard is bad."""
    num_processes = accelerator.num_processes if accelerator is not None else 1
    if not verify_checksums or num_processes == 1:
        return PairCache(pairs_dir, verify_checksums=verify_checksums)
    manifest = read_manifest(pairs_dir)
    problems = []
    if manifest is not None and manifest.get("complete"):
        for shard in manifest["shards"][accelerator.process_index :: num_processes]:
            problem = check_shard(Path(pairs_dir) / shard["file"], shard, manifest)
            if problem is not None:
                problems.append((shard["file"], problem))
    problems = sorted(gather_object(problems))
    if problems:
        name, problem = problems[0]
        raise PairCacheError(
            f"Pair cache shard {str(Path(pairs_dir) / name)!r} is unusable: {problem}. Run `tron generate-pairs` again "
            "with the same arguments to regenerate it."
        )
    return PairCache(pairs_dir, verify_checksums=False)


def generate_pairs_command(args) -> PairCache:
    """``tron generate-pairs``: write a pair cache with every process of an `accelerate launch` (args from
    `add_generate_pairs_arguments`)."""
    from accelerate import Accelerator

    from .arguments import check_generate_pairs_args

    check_generate_pairs_args(args)
    accelerator = Accelerator(mixed_precision=args.mixed_precision)
    cache = generate_pairs_from_args(args, accelerator)
    accelerator.print(f"Pair cache {args.pairs_dir!r}: {len(cache)} pairs in {cache.manifest['num_shards']} shard(s), complete.")
    return cache


def generate_pairs_from_args(args, accelerator) -> "PairCache":
    """`generate_pairs` with the generator and encoder of ``args.pipeline``, the condition route and the cache settings
    of ``args`` (`add_pair_arguments`), split over the processes of ``accelerator``."""
    pipeline = load_training_pipeline(args.pipeline)
    condition_fn = load_condition_fn(args.condition_fn) if args.condition_fn else None
    pipeline.to(accelerator.device)
    source = PairSource.from_pipeline(pipeline, condition_fn, args.condition_name)
    return generate_pairs(
        source, args.pairs_dir, args.num_pairs, args.pairs_per_shard, args.seed, args.generation_batch_size,
        args.pairs_dtype, accelerator=accelerator,
    )


__all__ = [
    "PairSource",
    "PairCache",
    "PairCacheError",
    "generate_pairs",
    "generate_pairs_command",
    "generate_pairs_from_args",
    "open_pair_cache",
    "load_training_pipeline",
    "load_condition_fn",
    "check_shard",
    "read_manifest",
    "derive_seed",
    "module_fingerprint",
]
