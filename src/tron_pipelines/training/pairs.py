"""Synthetic training pairs ``(z ~ p(z), c = f(G(z)))`` for TR0N's translator: made on the fly, or cached on disk.

A cache is one folder::

    manifest.json             what the cache holds and how it was made (tensors, generator/encoder identity, prior,
                              condition route, seed of every shard); ``"complete": true`` once every shard is written
    shard-00000.safetensors   ``conditions`` (n, condition_dim) and ``latents`` (n, total_latent_dim), packed as the
    shard-00001.safetensors   generator packs them (main latent first, then the auxiliary latents); for the caption
    ...                       and mix routes, the header's metadata also holds each pair's caption (JSON, ``null``
                              for the image-route pairs of a mix), so the cache can be re-encoded with another text
                              encoder without captioning again (`reencode_pairs`)

Shard ``i`` is drawn from a generator seeded by ``(seed, i)`` alone, so the cache is the same whatever the number of
processes that write it (each process writes a disjoint set of shards). Shards are written under a temporary name and
renamed, and carry a SHA-256 of their data in their header: a half-written or corrupted shard is never read as data.
"""

import hashlib
import json
import mmap
import os
import struct
import time
import warnings
from contextlib import nullcontext
from pathlib import Path

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
from ..utils.files import write_json_atomically
from ..utils.fingerprints import module_fingerprint
from .arguments import caption_settings
from .routes import ConditionRoute, ImageRoute, caption_conditions, load_condition_route


MANIFEST_NAME = "manifest.json"
CACHE_FORMAT = "tron-pairs"
# 2: condition routes by name ("image", "caption", "mix"), captions in the shards' metadata.
CACHE_FORMAT_VERSION = 2
TENSOR_NAMES = ("conditions", "latents")
CACHE_DTYPES = {"float32": (torch.float32, np.float32, "F32"), "float16": (torch.float16, np.float16, "F16")}

# Independent random streams, all derived from one user seed (see `derive_seed`).
SHARD_STREAM = 0  # pairs of cache shard i
VALIDATION_STREAM = 1  # held-out validation pairs
ONLINE_STREAM = 2  # on-the-fly training pairs, chunk i
NOISE_STREAM = 3  # condition noise of training micro-batch i
SHUFFLE_STREAM = 4  # order of the cache in epoch i
ENERGY_STREAM = 5  # translator draws scored by the validation energy
ROUTE_STREAM = 6  # the condition route's draws (mix choice, captioner sampling) for the pairs of one seed


class PairCacheError(ValueError):
    """A pair cache that cannot be used: missing, incomplete, corrupted, or made by other models or settings."""


def derive_seed(seed: int, stream: int, index: int) -> int:
    """A 63-bit seed for item ``index`` of random ``stream``, independent of how the work is split over processes."""
    words = np.random.SeedSequence([seed, stream, index]).generate_state(2, dtype=np.uint32)
    return ((int(words[0]) << 32) | int(words[1])) & (2**63 - 1)


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
        raise ValueError(
            f"`--pipeline` {str(path)!r}: its generator is a {type(pipeline.generator).__name__}, not a TronGenerator."
        )
    return pipeline


class PairSource:
    """Makes synthetic pairs from a frozen generator G and encoder f.

    Latents come from the generator's own prior (`TronGenerator.sample_latents`: clipped or truncated normals, and
    whatever auxiliary latents the generator draws, e.g. BigGAN's class embedding). The condition of a pair comes from
    G(z) by the condition ``route`` (`routes`): the encoder's embedding of the image (default), the text embedding of
    its caption, a seeded mix of both, or a custom function.

    Args:
        generator: The frozen generator.
        adapter: The frozen encoder, wrapped.
        route: A `ConditionRoute` (default `ImageRoute`, c = f(G(z))).

    Raises:
        ValueError: The route cannot work with this encoder (e.g. captions without a text encoder).
    """

    def __init__(self, generator: TronGenerator, adapter: EncoderAdapter, route: ConditionRoute | None = None):
        self.generator = generator
        self.adapter = adapter
        self.route = route if route is not None else ImageRoute()
        self.route.check(adapter)
        self._identity = None

    @classmethod
    def from_pipeline(cls, pipeline: TronPipeline, route: ConditionRoute | None = None):
        return cls(pipeline.generator, pipeline.encoder_adapter, route)

    def to(self, device) -> "PairSource":
        """Move the route's own models (a captioner) to ``device``; the generator and encoder move with the pipeline."""
        self.route.to(device)
        return self

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
                "condition": {**self.route.identity(), "dim": adapter.condition_dim},
                "latent_specs": self.latent_specs,
            }
        return self._identity

    @torch.no_grad()
    def make_pairs(self, num_pairs: int, seed: int, batch_size: int = 64, autocast=None, progress=None) -> dict:
        """``num_pairs`` pairs drawn from one generator seeded with ``seed``, in batches of ``batch_size``.

        Returns float32 tensors on the generator's device: ``latents`` ``(num_pairs, total_latent_dim)`` (packed) and
        ``conditions`` ``(num_pairs, condition_dim)``, and for routes that caption, ``captions`` (a list of
        ``num_pairs`` strings, ``None`` for the image-route pairs of a mix). The latents depend only on ``seed`` and
        ``batch_size``, not on the route (whose draws come from their own generator, seeded from ``seed``).
        ``autocast`` is an optional context manager factory (e.g. ``accelerator.autocast``) that G and f run under;
        ``progress`` an optional progress bar advanced by each batch's pairs.
        """
        device = self.device
        generator = torch.Generator(device).manual_seed(seed)
        route_generator = torch.Generator().manual_seed(derive_seed(seed, ROUTE_STREAM, 0))
        latents, conditions, captions = [], [], []
        for start in range(0, num_pairs, batch_size):
            count = min(batch_size, num_pairs - start)
            batch_latents = self.generator.sample_latents(count, generator=generator, device=device)
            with autocast() if autocast is not None else nullcontext():
                output = self.route(self.generator.generate(batch_latents), self.adapter, route_generator)
            self._check_conditions(output.conditions, count)
            latents.append(batch_latents.float())
            conditions.append(output.conditions.float())
            captions += output.captions or []
            if progress is not None:
                progress.update(count)
        pairs = {"latents": torch.cat(latents), "conditions": torch.cat(conditions)}
        if self.route.makes_captions:
            pairs["captions"] = captions
        return pairs

    def _check_conditions(self, conditions: torch.Tensor, count: int) -> None:
        if conditions.ndim != 2 or conditions.shape != (count, self.adapter.condition_dim):
            raise ValueError(
                f"The condition route {self.route.name!r} returned shape {tuple(conditions.shape)} for "
                f"{count} images; expected ({count}, {self.adapter.condition_dim}), the encoder's condition size, so "
                "that the trained translator fits the pipeline."
            )

    def shard_pairs(self, shard: dict, batch_size: int, autocast=None, progress=None) -> dict:
        """The pairs of cache shard ``shard`` (a manifest entry): `make_pairs` with the shard's size and seed."""
        return self.make_pairs(shard["num_pairs"], shard["seed"], batch_size, autocast=autocast, progress=progress)


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


def manifest_has_captions(manifest: dict) -> bool:
    """Whether the shards of a cache hold captions (caption and mix routes)."""
    return "captioner" in manifest.get("condition", {})


def _captions_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def check_shard(path: Path, shard: dict, manifest: dict, verify_checksum: bool = True) -> str | None:
    """Why shard file ``path`` cannot be used as entry ``shard`` of ``manifest``, or ``None`` when it can.

    Checks the header (shapes, dtypes, offsets that fill the file exactly, shard index and seed, one caption per pair
    when the route captions) and, when ``verify_checksum``, the SHA-256 of the data and of the captions.
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
    if manifest_has_captions(manifest):
        try:
            captions = json.loads(metadata.get("captions", "null"))
        except json.JSONDecodeError as error:
            return f"unreadable captions ({error})"
        if not isinstance(captions, list) or len(captions) != shard["num_pairs"]:
            return f"holds {len(captions) if isinstance(captions, list) else 'no'} captions, expected {shard['num_pairs']}"
        if verify_checksum and _captions_digest(metadata["captions"]) != metadata.get("captions_sha256"):
            return "captions checksum mismatch (corrupted)"
    if verify_checksum:
        try:
            digest = _file_digest(path, header, data_start)
        except ValueError as error:
            return str(error)
        if digest != metadata.get("sha256"):
            return "data checksum mismatch (corrupted)"
    return None


def read_shard_captions(path: str | os.PathLike) -> list[str | None]:
    """The captions stored in a shard's metadata (``None`` for the image-route pairs of a mix)."""
    header, _ = _read_header(Path(path))
    text = (header.get("__metadata__") or {}).get("captions")
    if text is None:
        raise PairCacheError(
            f"Pair cache shard {str(path)!r} holds no captions (its cache was not made by a caption route)."
        )
    return json.loads(text)


def _write_shard(path: Path, pairs: dict, shard: dict, dtype: str) -> None:
    arrays = {name: pairs[name].detach().to("cpu", CACHE_DTYPES[dtype][0]).contiguous() for name in TENSOR_NAMES}
    metadata = {
        "shard_index": str(shard["index"]),
        "seed": str(shard["seed"]),
        "sha256": _tensors_digest({name: tensor.numpy() for name, tensor in arrays.items()}),
    }
    if "captions" in pairs:
        # In the same file as the tensors, so that one rename publishes both.
        metadata["captions"] = json.dumps(pairs["captions"], ensure_ascii=False)
        metadata["captions_sha256"] = _captions_digest(metadata["captions"])
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(arrays, str(temporary), metadata=metadata)
    with open(temporary, "rb+") as file:
        os.fsync(file.fileno())
    # Atomic on POSIX: readers see either no shard or a whole one.
    os.replace(temporary, path)


def read_manifest(pairs_dir: str | os.PathLike) -> dict | None:
    """The manifest of the cache in ``pairs_dir``, or ``None`` when there is none."""
    path = Path(pairs_dir) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise PairCacheError(
            f"`--pairs_dir` {str(pairs_dir)!r}: {MANIFEST_NAME} is not valid JSON ({error})."
        ) from error
    if manifest.get("format") != CACHE_FORMAT:
        raise PairCacheError(
            f"`--pairs_dir` {str(pairs_dir)!r} does not hold a {CACHE_FORMAT} cache ({MANIFEST_NAME} format {manifest.get('format')!r})."
        )
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
    return [
        f"{key}: cache has {manifest.get(key)!r}, requested {expected.get(key)!r}"
        for key in keys
        if manifest.get(key) != expected.get(key)
    ]


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
    for name, value in (
        ("num_pairs", num_pairs),
        ("pairs_per_shard", pairs_per_shard),
        ("generation_batch_size", generation_batch_size),
    ):
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
        raise PairCacheError(
            f"`--pairs_dir` {str(pairs_dir)!r} is not empty and holds no {MANIFEST_NAME}; choose an empty or new folder."
        )
    # Every process has checked the folder before the main process writes to it.
    wait()
    if is_main:
        pairs_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomically(pairs_dir / MANIFEST_NAME, expected)
    wait()

    own_shards = expected["shards"][process_index::num_processes]
    autocast = accelerator.autocast if accelerator is not None else None
    generated = 0
    start_time = time.perf_counter()
    progress = tqdm(
        total=sum(shard["num_pairs"] for shard in own_shards),
        desc=f"Generating pairs (process {process_index + 1}/{num_processes})"
        if num_processes > 1
        else "Generating pairs",
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
        pairs = source.shard_pairs(shard, generation_batch_size, autocast=autocast, progress=progress)
        _write_shard(path, pairs, shard, dtype)
        generated += shard["num_pairs"]
    progress.close()
    elapsed = time.perf_counter() - start_time
    counts = [(generated, elapsed)]
    if accelerator is not None and num_processes > 1:
        counts = gather_object(counts)

    if is_main:
        missing = [
            shard["file"]
            for shard in expected["shards"]
            if check_shard(pairs_dir / shard["file"], shard, expected, verify_checksum=False)
        ]
        if missing:
            raise PairCacheError(f"Pair cache {str(pairs_dir)!r}: shards {missing} are missing after generation.")
        write_json_atomically(pairs_dir / MANIFEST_NAME, {**expected, "complete": True})
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
            name: np.empty((indices.size, self.manifest["tensors"][name]["shape"][1]), dtype=np.float32)
            for name in TENSOR_NAMES
        }
        for shard_id in np.unique(shard_ids):
            rows = np.nonzero(shard_ids == shard_id)[0]
            local = indices[rows] - self._shard_starts[shard_id]
            order = np.argsort(local, kind="stable")  # ascending reads touch each page once
            for name in TENSOR_NAMES:
                batch[name][rows[order]] = maps[shard_id][name][local[order]]
        tensors = {name: torch.from_numpy(array) for name, array in batch.items()}
        return {name: tensor[0] for name, tensor in tensors.items()} if single else tensors

    @property
    def has_captions(self) -> bool:
        return manifest_has_captions(self.manifest)

    def captions(self) -> list[str | None]:
        """Every pair's caption, in cache order (``None`` for the image-route pairs of a mix); `PairCacheError` when
        the cache's route does not caption."""
        if not self.has_captions:
            raise PairCacheError(
                f"The pair cache in {str(self.pairs_dir)!r} holds no captions (route {self.manifest['condition']['route']!r})."
            )
        return [
            caption
            for shard in self.manifest["shards"]
            for caption in read_shard_captions(self.pairs_dir / shard["file"])
        ]

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


class ReencodingSource(PairSource):
    """Pairs of an existing cache with their conditions computed again by another encoder, without captioning again.

    Shard ``i`` keeps the latents and captions of shard ``i`` of ``cache``; a caption's condition is the new text
    encoder's embedding of it, an image-route pair's is the new encoder's embedding of G(z), rendered again from its
    latents. For a caption or mix route this is exactly the cache that generating with the new encoder (and the same
    captioner, seed and sizes) would write.

    Args:
        generator: The cache's generator (checked by weights).
        adapter: The new encoder.
        cache: The cache to re-encode; its route must caption.
    """

    def __init__(self, generator: TronGenerator, adapter: EncoderAdapter, cache: "PairCache"):
        if not cache.has_captions:
            raise PairCacheError(
                f"`--reencode_from` {str(cache.pairs_dir)!r} was made by the {cache.manifest['condition']['route']!r} route and "
                "holds no captions: only caption and mix caches can be re-encoded (generate the pairs again instead)."
            )
        super().__init__(generator, adapter)
        self.cache = cache
        generator_identity = self.identity()["generator"]
        if cache.manifest["generator"] != generator_identity:
            raise PairCacheError(
                f"`--reencode_from` {str(cache.pairs_dir)!r} was made by another generator ({cache.manifest['generator']}) than "
                f"the `--pipeline`'s ({generator_identity}): its latents would not fit."
            )
        if adapter.kind != "clip" or adapter.tokenizer is None:
            raise ValueError(
                "Re-encoding captions needs a `--pipeline` with a text encoder (a CLIP encoder and its tokenizer)."
            )

    def identity(self) -> dict:
        if self._identity is None:
            identity = super().identity()
            condition = {key: value for key, value in self.cache.manifest["condition"].items() if key != "dim"}
            self._identity = {
                **identity,
                "condition": {**condition, "dim": self.adapter.condition_dim},
                "latent_specs": self.cache.manifest["latent_specs"],
                "reencoded_from": {"encoder": self.cache.manifest["encoder"]},
            }
        return self._identity

    @torch.no_grad()
    def shard_pairs(self, shard: dict, batch_size: int, autocast=None, progress=None) -> dict:
        start = int(self.cache._shard_starts[shard["index"]])
        latents = self.cache[np.arange(start, start + shard["num_pairs"])]["latents"].to(self.device)
        captions = read_shard_captions(self.cache.pairs_dir / self.cache.manifest["shards"][shard["index"]]["file"])
        conditions = torch.empty(len(captions), self.adapter.condition_dim, device=self.device)
        with autocast() if autocast is not None else nullcontext():
            for begin in range(0, len(captions), batch_size):
                stop = min(begin + batch_size, len(captions))
                batch_latents = latents[begin:stop]
                conditions[begin:stop] = caption_conditions(
                    self.adapter,
                    captions[begin:stop],
                    lambda rows: self.generator.generate(batch_latents[rows]),
                    self.device,
                )
                if progress is not None:
                    progress.update(stop - begin)
        return {"latents": latents, "conditions": conditions, "captions": captions}


def reencode_pairs(
    source: PairSource | TronPipeline,
    from_dir: str | os.PathLike,
    pairs_dir: str | os.PathLike,
    accelerator=None,
    show_progress: bool = True,
) -> "PairCache":
    """Write in ``pairs_dir`` the cache ``from_dir`` re-encoded by ``source``'s encoder (e.g. a new CLIP): same
    latents, same captions, conditions from the new encoder; no captioning. Resumable and split over the processes of
    ``accelerator`` like `generate_pairs`, with the same number of pairs, shards, seed and storage type as the
    original. ``source`` must have the original's generator; its route is not used (the original's is kept)."""
    if isinstance(source, TronPipeline):
        source = PairSource.from_pipeline(source)
    cache = open_pair_cache(from_dir, accelerator=accelerator)
    if Path(pairs_dir).resolve() == Path(from_dir).resolve():
        raise ValueError(
            "`--pairs_dir` must differ from `--reencode_from`: the original cache is read while the new one is written."
        )
    reencoding = ReencodingSource(source.generator, source.adapter, cache)
    manifest = cache.manifest
    return generate_pairs(
        reencoding,
        pairs_dir,
        manifest["num_pairs"],
        manifest["pairs_per_shard"],
        manifest["seed"],
        manifest["generation_batch_size"],
        manifest["tensors"]["latents"]["dtype"],
        accelerator=accelerator,
        show_progress=show_progress,
    )


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


def generate_pairs_from_args(args, accelerator) -> "PairCache":
    """`generate_pairs` with the generator and encoder of ``args.pipeline``, the condition route and the cache settings
    of ``args`` (`add_pair_arguments`), split over the processes of ``accelerator``."""
    pipeline = load_training_pipeline(args.pipeline)
    pipeline.to(accelerator.device)
    route = load_condition_route(args.condition_route, args.captioner, args.caption_ratio, caption_settings(args))
    source = PairSource.from_pipeline(pipeline, route).to(accelerator.device)
    return generate_pairs(
        source,
        args.pairs_dir,
        args.num_pairs,
        args.pairs_per_shard,
        args.seed,
        args.generation_batch_size,
        args.pairs_dtype,
        accelerator=accelerator,
    )


__all__ = [
    "PairSource",
    "PairCache",
    "PairCacheError",
    "ReencodingSource",
    "generate_pairs",
    "reencode_pairs",
    "generate_pairs_from_args",
    "open_pair_cache",
    "load_training_pipeline",
    "read_shard_captions",
    "check_shard",
    "read_manifest",
    "derive_seed",
]
