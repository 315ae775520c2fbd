"""A property-based net for bad input (issue 23): random mutations of a valid run config and of
valid forget/retain files, each run through the real command line in-process.

Whatever the mutation, ``obliviate`` must exit 0 (the input happened to be valid: one step on the
tiny model) or 2 (one line starting with ``error:``, no traceback), leave every input file byte
for byte as it was, and create nothing next to the inputs: only the run folder under
``run.output_dir``. The plain regression tests at the end pin the defects this net found.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.conftest import FORGET, RETAIN

NET = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
ABSOLUTE = "<absolute path beside the case>"  # replaced by a real absolute path when the config is written

# ----------------------------------------------------------------------------- running one case


def run_cli(monkeypatch, capsys, *args) -> tuple[int, str]:
    from obliviate.cli import main as cli

    monkeypatch.setattr(sys, "argv", ["obliviate", *map(str, args)])
    try:
        cli.main()
        code = 0
    except SystemExit as done:
        code = 0 if done.code is None else done.code
    return code, capsys.readouterr().err


def new_case(tmp_path: Path, monkeypatch) -> Path:
    """A fresh folder per example (hypothesis reuses the function's tmp_path): inputs/ holds the
    config and the data, runs/ is run.output_dir, and the case is the working directory."""
    case = Path(tempfile.mkdtemp(dir=tmp_path))
    (case / "inputs").mkdir()
    (case / "runs").mkdir()
    monkeypatch.chdir(case)
    return case


def base_config(model_dir: Path) -> dict:
    return {
        "run": {"name": "net", "output_dir": "runs"},
        "model": {"name": str(model_dir)},
        "data": {"forget": {"path": "forget.jsonl"}, "retain": {"path": "retain.csv"}},
        "train": {"max_steps": 1, "lr": 1e-3, "batch_size": 2, "save_every": 0, "seed": 0},
    }


def forget_jsonl() -> bytes:
    return "".join(json.dumps(row) + "\n" for row in FORGET).encode()


def retain_csv() -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["prompt", "response"])
    writer.writerows([row["prompt"], row["response"]] for row in RETAIN)
    return out.getvalue().encode()


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_held(case: Path, before: dict[str, str], code: int, err: str) -> None:
    assert "Traceback" not in err, err
    assert code in (0, 2), f"exit {code}: {err}"
    if code == 2:
        lines = err.rstrip("\n").split("\n")
        assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert snapshot(case / "inputs") == before, "an input file changed, vanished or appeared"
    assert sorted(p.name for p in case.iterdir()) == ["inputs", "runs"], "something was written outside run.output_dir"
    for entry in (case / "runs").iterdir():  # only run folders (marked) there
        assert (entry / ".obliviate-run").is_file(), entry


# ----------------------------------------------------------------------------- strategies

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**20, max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["", " ", ".", "..", "../x", "/", "a/b", "a\\b", "\x00", "nul\x00byte", "2024-13-01", "builtin:nope", "~"]),
)
VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12
)
KNOWN_KEYS = [
    ("run", "name"), ("run", "output_dir"), ("model", "name"), ("model", "trust_remote_code"),
    ("data",), ("data", "forget"), ("data", "forget", "path"), ("data", "forget", "format"), ("data", "forget", "limit"),
    ("data", "forget", "prompt_field"), ("data", "retain", "path"), ("data", "random_answers"), ("data", "max_length"),
    ("data", "template"), ("method",), ("method", "name"), ("method", "forget_weight"), ("train",), ("train", "lr"),
    ("train", "batch_size"), ("train", "max_steps"), ("train", "epochs"), ("train", "seed"), ("train", "precision"),
    ("train", "save_every"), ("train", "lora"), ("train", "lora", "r"), ("train", "lora", "alpha"),
    ("train", "lora", "target_modules"), ("train", "lora", "init_from"), ("early_stopping",), ("run",),
]
UNKNOWN_KEYS = st.tuples(st.sampled_from(["run", "model", "data", "method", "train", "bogus"]), st.text(min_size=1, max_size=12))
RUN_NAMES = st.sampled_from(["..", ".", "../x", "a/b", "a\\b", "/", "", " ", ABSOLUTE, "inputs", "../inputs"]) | st.text(max_size=20)
ENCODINGS = st.sampled_from(["latin-1", "utf-16", "utf-32", "cp1252"])


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def aliases(levels: int) -> str:
    """Aliases to aliases nine wide: small text, an exponentially large structure if expanded."""
    lines = ["x0: &x0 [a, a, a, a, a, a, a, a, a]"]
    lines += [f"x{i}: &x{i} [" + ", ".join([f"*x{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


CONFIG_MUTATIONS = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(KNOWN_KEYS), VALUES),
    st.tuples(st.just("set"), UNKNOWN_KEYS, VALUES),
    st.tuples(st.just("set"), st.just(("run", "name")), RUN_NAMES),
    st.tuples(st.just("delete"), st.sampled_from(KNOWN_KEYS)),
    st.tuples(st.just("top level"), VALUES),
    st.tuples(st.just("encode"), ENCODINGS, st.text(min_size=1, max_size=10)),
    st.tuples(st.just("truncate"), st.integers(min_value=0, max_value=2000)),
    st.tuples(st.just("insert bytes"), st.integers(min_value=0, max_value=2000), st.binary(min_size=1, max_size=20)),
    st.tuples(st.just("bytes"), st.binary(max_size=200)),
    st.tuples(st.just("append"), st.sampled_from([
        "train_nested: " + nested(50), "deep: " + nested(5000), "deep: " + "{a: " * 3000 + "}" * 3000,
        aliases(9), "lr_again: " + "1" * 5000, "when: 2024-13-01", "bin: !!binary xyz", "obj: !!python/object:os.system ls",
        "loop: &l [*l]", "? [a, b]\n: c", "%TAG ! tag:x,2000:\n---\nx: 1", "\t\tbad indent",
    ])),
    st.tuples(st.just("value text"), st.sampled_from(["lr", "max_steps", "batch_size", "name"]), st.sampled_from([
        "1" * 5000, "2024-13-01", ".inf", "-.inf", ".nan", "0x1F", "1e99999", "!!binary xyz", "!!float abc", "*undefined",
        "&a", "[", "{", "'", '"\\x"', "|\n  text", nested(2000), "~",
    ])),
)


def apply_config_mutation(base: dict, mutation: tuple, case: Path) -> bytes:
    kind, *args = mutation
    data = json.loads(json.dumps(base))
    if kind == "set":
        keys, value = args
        value = str(case / "elsewhere") if value == ABSOLUTE else value
        node = data
        for key in keys[:-1]:
            node = node.setdefault(key, {}) if isinstance(node.get(key, {}), dict) else node
        node[keys[-1]] = value
    elif kind == "delete":
        node = data
        for key in args[0][:-1]:
            node = node.get(key, {})
        node.pop(args[0][-1], None)
    elif kind == "top level":
        data = args[0]
    text = yaml.safe_dump(data, sort_keys=False)
    if kind == "encode":
        encoding, extra = args
        return text.replace("name: net", f"name: 'net{extra}'").encode(encoding, errors="replace")
    raw = text.encode()
    if kind == "truncate":
        return raw[: args[0] % (len(raw) + 1)]
    if kind == "insert bytes":
        at = args[0] % (len(raw) + 1)
        return raw[:at] + args[1] + raw[at:]
    if kind == "bytes":
        return args[0]
    if kind == "append":
        return raw + args[0].encode() + b"\n"
    if kind == "value text":
        key, value = args
        lines = text.splitlines()
        index = next(i for i, line in enumerate(lines) if line.strip().startswith(f"{key}:"))
        lines[index] = lines[index].split(":")[0] + ": " + value
        return ("\n".join(lines) + "\n").encode()
    return raw


FIELD_VALUES = VALUES | st.sampled_from([float("nan"), float("inf"), 10**400, "", "  ", [], {}])
DATA_MUTATIONS = st.one_of(
    st.tuples(st.just("field"), st.integers(0, 3), st.sampled_from(["prompt", "response"]), FIELD_VALUES),
    st.tuples(st.just("drop field"), st.integers(0, 3), st.sampled_from(["prompt", "response"])),
    st.tuples(st.just("add field"), st.integers(0, 3), st.text(max_size=10), FIELD_VALUES),
    st.tuples(st.just("rename field"), st.integers(0, 3), st.sampled_from(["prompt", "response"]), st.text(max_size=10)),
    st.tuples(st.just("row"), st.integers(0, 3), VALUES),
    st.tuples(st.just("encode"), ENCODINGS, st.text(min_size=1, max_size=10)),
    st.tuples(st.just("truncate"), st.integers(min_value=0, max_value=400)),
    st.tuples(st.just("insert bytes"), st.integers(min_value=0, max_value=400), st.binary(min_size=1, max_size=20)),
    st.tuples(st.just("bytes"), st.binary(max_size=200)),
    st.tuples(st.just("append"), st.sampled_from([
        nested(100), nested(100_000), '{"prompt": ' + "1" * 5000 + ', "response": "r"}', '{"prompt": NaN, "response": Infinity}',
        "x" * 200_000, '"unclosed, quote', "a,b,c,d,e", "only", "\x00\x00", "\ufeffprompt,response", "{}", "[]", "null",
    ])),
)


def rows_of(which: str) -> list[dict]:
    return [dict(row) for row in (FORGET if which == "forget" else RETAIN)]


def serialise(which: str, rows: list, header: list[str] | None = None) -> str:
    if which == "forget":
        return "".join(json.dumps(row, allow_nan=True, default=str) + "\n" for row in rows)
    header = header or ["prompt", "response"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        if isinstance(row, dict):
            writer.writerow([str(value) for value in row.values()])
        else:
            writer.writerow([str(row)])
    return out.getvalue()


def apply_data_mutation(which: str, mutation: tuple) -> bytes:
    kind, *args = mutation
    rows = rows_of(which)
    original = forget_jsonl() if which == "forget" else retain_csv()
    if kind == "field":
        index, field, value = args
        rows[index][field] = value
        return serialise(which, rows).encode()
    if kind == "drop field":
        index, field = args
        del rows[index][field]
        return serialise(which, rows).encode()
    if kind == "add field":
        index, name, value = args
        rows[index][name] = value
        header = ["prompt", "response", name] if which == "retain" and name not in ("prompt", "response") else None
        return serialise(which, rows, header).encode()
    if kind == "rename field":
        index, field, name = args
        rows[index][name] = rows[index].pop(field)
        header = [name if f == field else f for f in ("prompt", "response")] if which == "retain" else None
        return serialise(which, rows, header).encode()
    if kind == "row":
        rows[args[0]] = args[1]
        return serialise(which, rows).encode()
    if kind == "encode":
        encoding, extra = args
        rows[0]["prompt"] += extra
        return serialise(which, rows).encode(encoding, errors="replace")
    if kind == "truncate":
        return original[: args[0] % (len(original) + 1)]
    if kind == "insert bytes":
        at = args[0] % (len(original) + 1)
        return original[:at] + args[1] + original[at:]
    if kind == "bytes":
        return args[0]
    if kind == "append":
        return original + args[0].encode() + b"\n"
    return original


def write_inputs(case: Path, config: bytes, forget: bytes, retain: bytes) -> tuple[Path, dict[str, str]]:
    inputs = case / "inputs"
    (inputs / "config.yaml").write_bytes(config)
    (inputs / "forget.jsonl").write_bytes(forget)
    (inputs / "retain.csv").write_bytes(retain)
    return inputs / "config.yaml", snapshot(inputs)


# ----------------------------------------------------------------------------- the net


@NET
@given(mutation=CONFIG_MUTATIONS, overwrite=st.booleans())
def test_any_mutated_config_exits_0_or_2_on_one_line_and_touches_no_input(
    mutation, overwrite, tiny_model_dir, tmp_path, monkeypatch, capsys
):
    case = new_case(tmp_path, monkeypatch)
    config_bytes = apply_config_mutation(base_config(tiny_model_dir), mutation, case)
    config, before = write_inputs(case, config_bytes, forget_jsonl(), retain_csv())
    code, err = run_cli(monkeypatch, capsys, "config", "show", "-c", config)
    assert_held(case, before, code, err)
    code, err = run_cli(monkeypatch, capsys, "unlearn", "-c", config, "--no-progress", *(["--overwrite"] if overwrite else []))
    event(f"exit {code}")  # --hypothesis-show-statistics: how many mutations were refused, how many trained
    assert_held(case, before, code, err)


@NET
@given(which=st.sampled_from(["forget", "retain"]), mutation=DATA_MUTATIONS)
def test_any_mutated_data_file_exits_0_or_2_on_one_line_and_touches_no_input(
    which, mutation, tiny_model_dir, tmp_path, monkeypatch, capsys
):
    case = new_case(tmp_path, monkeypatch)
    mutated = apply_data_mutation(which, mutation)
    forget = mutated if which == "forget" else forget_jsonl()
    retain = mutated if which == "retain" else retain_csv()
    config_bytes = yaml.safe_dump(base_config(tiny_model_dir), sort_keys=False).encode()
    config, before = write_inputs(case, config_bytes, forget, retain)
    code, err = run_cli(monkeypatch, capsys, "unlearn", "-c", config, "--no-progress")
    event(f"exit {code}")
    assert_held(case, before, code, err)


def test_the_net_lets_a_valid_input_through(tiny_model_dir, tmp_path, monkeypatch, capsys):
    """The unmutated inputs train (so a net that only ever saw exit 2 would be testing nothing)."""
    case = new_case(tmp_path, monkeypatch)
    config_bytes = yaml.safe_dump(base_config(tiny_model_dir), sort_keys=False).encode()
    config, before = write_inputs(case, config_bytes, forget_jsonl(), retain_csv())
    code, err = run_cli(monkeypatch, capsys, "unlearn", "-c", config, "--no-progress")
    assert code == 0, err
    assert (case / "runs" / "net" / "model").is_dir()
    assert_held(case, before, code, err)


# ----------------------------------------------------------------------------- what the net found


def one_line(code: int, err: str) -> str:
    assert code == 2, err
    lines = err.rstrip("\n").split("\n")
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def case(tmp_path, monkeypatch, tiny_model_dir):
    """Writes the inputs (the valid ones unless given) and returns the config path."""

    def make(config: bytes | None = None, forget: bytes | None = None, retain: bytes | None = None) -> Path:
        folder = new_case(tmp_path, monkeypatch)
        config = config if config is not None else yaml.safe_dump(base_config(tiny_model_dir), sort_keys=False).encode()
        path, _ = write_inputs(folder, config, forget if forget is not None else forget_jsonl(), retain or retain_csv())
        return path

    return make


def valid_config_text(tiny_model_dir) -> str:
    return yaml.safe_dump(base_config(tiny_model_dir), sort_keys=False)


def test_aliases_to_aliases_are_indexed_once_not_expanded(tiny_model_dir, case, monkeypatch, capsys):
    # Nine levels of nine aliases: 9**9 leaves if walked alias by alias (line_index never ended).
    from obliviate.config import line_index

    assert len(line_index(aliases(9))) == 9 + 9 * 9
    config = case((valid_config_text(tiny_model_dir) + aliases(9)).encode())
    line = one_line(*run_cli(monkeypatch, capsys, "config", "show", "-c", config))
    assert f"{config}:" in line and "unknown key 'x0' in top level" in line


def test_a_value_quoting_nested_aliases_is_shown_short(tiny_model_dir, case, monkeypatch, capsys):
    text = aliases(9) + valid_config_text(tiny_model_dir).replace("lr: 0.001", "lr: *x8")
    config = case(text.encode())
    line = one_line(*run_cli(monkeypatch, capsys, "config", "show", "-c", config))
    assert "train.lr: Input should be a valid number" in line and len(line) < 400


@pytest.mark.parametrize("value,reason", [
    ("1" * 5000, "Exceeds the limit (4300 digits) for integer string conversion"),
    ("2024-13-01", "month must be in 1..12"),
])
def test_a_yaml_value_python_cannot_build_is_one_line(value, reason, tiny_model_dir, case, monkeypatch, capsys):
    config = case(valid_config_text(tiny_model_dir).replace("seed: 0", f"seed: {value}").encode())
    for command in (("config", "show", "-c", config), ("unlearn", "-c", config)):
        line = one_line(*run_cli(monkeypatch, capsys, *command))
        assert line.startswith(f"error: {config}: not valid YAML (a value cannot be read: {reason}")
        assert "set_int_max_str_digits" not in line


@pytest.mark.parametrize("line_text,reason", [
    ('{"prompt": ' + "1" * 5000 + ', "response": "r"}', "Exceeds the limit (4300 digits)"),
    (nested(100_000), "nested too deeply"),
])
def test_a_jsonl_line_past_pythons_limits_is_one_line(line_text, reason, case, monkeypatch, capsys):
    config = case(forget=forget_jsonl() + line_text.encode() + b"\n")
    line = one_line(*run_cli(monkeypatch, capsys, "unlearn", "-c", config))
    forget = config.parent / "forget.jsonl"
    assert line.startswith(f"error: {forget}:{len(FORGET) + 1}: not readable JSON ({reason}")


def test_a_jsonl_line_past_pythons_limits_in_a_plain_jsonl_reader(tmp_path):
    from obliviate.errors import UserError
    from obliviate.io import read_jsonl

    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n' + nested(100_000) + "\n")
    with pytest.raises(UserError, match=r"rows\.jsonl:2: not readable JSON \(nested too deeply\)"):
        read_jsonl(path)


def test_a_csv_cell_past_the_field_limit_is_one_line(case, monkeypatch, capsys):
    config = case(retain=retain_csv() + b"q," + b"x" * 200_000 + b"\n")
    line = one_line(*run_cli(monkeypatch, capsys, "unlearn", "-c", config))
    assert line.startswith(f"error: {config.parent / 'retain.csv'}:{len(RETAIN) + 2}: not a readable CSV row (field larger than field limit")


def test_a_line_break_in_a_quoted_key_stays_on_one_line(case, monkeypatch, capsys):
    config = case(forget=forget_jsonl() + json.dumps({"prom\npt": "q", "response": "r"}).encode() + b"\n")
    line = one_line(*run_cli(monkeypatch, capsys, "unlearn", "-c", config))
    assert "field 'prompt' missing (row has: prom\\npt, response)" in line


@pytest.mark.parametrize("value,reason", [
    ("1" * 5000, "Unable to parse input string as an integer, exceeded maximum size"),
    ("2024-13-01", "Input should be a valid integer"),
])
def test_an_override_python_cannot_build_is_taken_as_text(value, reason, case, monkeypatch, capsys):
    line = one_line(*run_cli(monkeypatch, capsys, "config", "show", "-c", case(), f"train.seed={value}"))
    assert f"train.seed: {reason}" in line and len(line) < 400


# ----------------------------------------------------------------------------- what already held, pinned


def test_a_yaml_tag_cannot_build_a_python_object(tiny_model_dir, case, monkeypatch, capsys):
    config = case((valid_config_text(tiny_model_dir) + "hook: !!python/object/apply:os.system [touch pwned]\n").encode())
    line = one_line(*run_cli(monkeypatch, capsys, "unlearn", "-c", config))
    assert f"{config}:" in line and "not valid YAML" in line
    assert not (config.parent / "pwned").exists() and not Path("pwned").exists()


def test_resume_with_a_changed_config_is_refused(tiny_model_dir, case, monkeypatch, capsys):
    config = case()
    code, err = run_cli(monkeypatch, capsys, "unlearn", "-c", config, "--no-progress")
    assert code == 0, err
    saved = (Path("runs") / "net" / "config.yaml").read_bytes()
    line = one_line(*run_cli(monkeypatch, capsys, "unlearn", "-c", config, "--resume", "train.lr=0.5"))
    assert "section 'train' differs from its config.yaml; resume with the same config" in line
    assert (Path("runs") / "net" / "config.yaml").read_bytes() == saved
