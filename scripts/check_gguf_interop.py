#!/usr/bin/env python3
# Interop check: reads a GGUF file with the reference reader, the PyPI `gguf` package's
# GGUFReader (gguf-py from llama.cpp, pinned in scripts/requirements.txt), and compares
# every key/value, every tensor (name, type, shape, offset, bytes) and the alignment with
# an expected-values JSON. The Rust test tests/tests/gguf_interop.rs writes both files with
# our GgufWriter and runs this script; it can also be run by hand:
#
#   .venv/bin/python scripts/check_gguf_interop.py FILE.gguf EXPECTED.json
#
# EXPECTED.json:
#   {"version": 3, "alignment": 64, "data_offset": 1216,
#    "kv": [{"key": K, "type": T, "value": V}, ...],          # in file order
#    "tensors": [{"name": N, "type": ID, "type_name": "q4_K", "shape": [ne0, ...],
#                 "offset": O, "n_bytes": B, "data_hex": "..."}, ...]}   # in file order
# T is a GGUF value type name as gemma-gguf spells it (u8 i8 u16 i16 u32 i32 f32 bool str
# u64 i64 f64 arr); an array has "element_type" too and V is a list. Integers are JSON
# numbers, bools JSON booleans, strings JSON strings (compared as UTF-8 bytes), and floats
# the hex of their IEEE-754 bits ("0x3f800000") so that NaN payloads, -0.0 and
# subnormals compare exactly. Shapes are in ggml order (ne0, the row length, first);
# offsets are relative to the data section, as stored in the file.
#
# Exit status: 0 everything equal, 1 a mismatch (each printed to stderr), 2 bad arguments
# or unreadable input, 3 the gguf or numpy package is missing.
from __future__ import annotations

import argparse
import json
import sys
from importlib import metadata
from typing import Any, Callable

EXIT_MISMATCH = 1
EXIT_BAD_INPUT = 2
EXIT_MISSING_PACKAGE = 3

try:
    import numpy as np
    from gguf import GGUFReader, GGUFValueType
    from gguf.constants import GGML_QUANT_SIZES
except ImportError as e:
    print(f"error: {e}; run `scripts/venv.sh -r scripts/requirements.txt`", file=sys.stderr)
    sys.exit(EXIT_MISSING_PACKAGE)

# The fields GGUFReader adds for the header (gguf_reader.py, GGUFReader.__init__).
PSEUDO_FIELDS = ("GGUF.version", "GGUF.tensor_count", "GGUF.kv_count")

# gemma-gguf's value type names (GgufValueType::name) to gguf-py's enum.
VALUE_TYPES = {
    "u8": GGUFValueType.UINT8,
    "i8": GGUFValueType.INT8,
    "u16": GGUFValueType.UINT16,
    "i16": GGUFValueType.INT16,
    "u32": GGUFValueType.UINT32,
    "i32": GGUFValueType.INT32,
    "f32": GGUFValueType.FLOAT32,
    "bool": GGUFValueType.BOOL,
    "str": GGUFValueType.STRING,
    "arr": GGUFValueType.ARRAY,
    "u64": GGUFValueType.UINT64,
    "i64": GGUFValueType.INT64,
    "f64": GGUFValueType.FLOAT64,
}

# Floats are compared as their bits: the unsigned type of the same width.
FLOAT_BITS = {"f32": np.uint32, "f64": np.uint64}


class Mismatches:
    """Collects every difference, so one run reports all of them."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, what: str, message: str) -> None:
        self.items.append(f"{what}: {message}")

    def check(self, what: str, label: str, actual: Any, expected: Any) -> bool:
        if actual == expected:
            return True
        self.add(what, f"{label} is {actual!r}, expected {expected!r}")
        return False


def type_name(t: int) -> str:
    return next((k for k, v in VALUE_TYPES.items() if v == t), f"unknown type {t}")


def raw_values(field: Any, elem: str) -> list[Any]:
    """The field's values straight from its parts: ints, bools as their byte (0/1),
    floats as their bits, strings as bytes."""
    parts = [field.parts[i] for i in field.data]
    if elem == "str":
        return [bytes(p.tobytes()) for p in parts]
    if not parts:
        return []
    flat = np.concatenate([np.asarray(p).reshape(-1) for p in parts])
    if elem == "bool":
        return flat.view(np.uint8).tolist()
    if elem in FLOAT_BITS:
        return flat.view(FLOAT_BITS[elem]).tolist()
    return flat.tolist()


def expected_raw(values: list[Any], elem: str) -> list[Any]:
    """The expected values in the form raw_values returns."""
    if elem == "str":
        return [v.encode("utf-8") for v in values]
    if elem == "bool":
        return [1 if v else 0 for v in values]
    if elem in FLOAT_BITS:
        return [int(v, 16) for v in values]
    return values


def check_kv(field: Any, exp: dict[str, Any], bad: Mismatches) -> bool:
    what = f"key {exp['key']!r}"
    n_before = len(bad.items)
    main = exp["type"]
    if not bad.check(what, "type", type_name(field.types[0]), main):
        return False
    if main == "arr":
        elem = exp["element_type"]
        values = exp["value"]
        # parts[3] is the array's element type and parts[4] its length (after the key's
        # length, the key and the value type); `types` has no element type when empty.
        bad.check(what, "element type", type_name(int(field.parts[3][0])), elem)
        if len(field.types) > 1:
            bad.check(what, "types[1]", type_name(field.types[1]), elem)
        bad.check(what, "length", int(field.parts[4][0]), len(values))
    else:
        elem = main
        values = [exp["value"]]
    actual = raw_values(field, elem)
    expected = expected_raw(values, elem)
    if actual != expected:
        show = (lambda v: f"{v:#x}") if elem in FLOAT_BITS else repr
        diffs = [i for i, (a, e) in enumerate(zip(actual, expected)) if a != e]
        if diffs:
            i = diffs[0]
            first = f"element {i} is {show(actual[i])}, expected {show(expected[i])}"
            bad.add(what, f"{len(diffs)} of {len(expected)} values differ; {first}")
        else:
            bad.add(what, f"{len(actual)} values, expected {len(expected)}")
    # The decoded view gguf-py's tools use (ReaderField.contents). Floats are left out:
    # contents() widens them to Python floats, which need not keep a NaN's payload.
    if elem not in FLOAT_BITS:
        decoded = field.contents()
        if main != "arr":
            decoded = [decoded]
        bad.check(what, "contents()", decoded, values)
    return len(bad.items) == n_before


def check_tensor(reader: Any, t: Any, exp: dict[str, Any], bad: Mismatches) -> bool:
    what = f"tensor {exp['name']!r}"
    n_before = len(bad.items)
    shape = exp["shape"]
    n_elements = int(np.prod(shape, dtype=np.int64))
    bad.check(what, "type id", int(t.tensor_type), exp["type"])
    bad.check(what, "type name", t.tensor_type.name.lower(), exp["type_name"].lower())
    bad.check(what, "shape (ggml order)", [int(d) for d in t.shape], shape)
    bad.check(what, "n_elements", int(t.n_elements), n_elements)
    # Our type table against gguf-py's (constants.py GGML_QUANT_SIZES).
    block_size, type_size = GGML_QUANT_SIZES[t.tensor_type]
    n_bytes = n_elements // block_size * type_size
    bad.check(what, "size by gguf-py's type table", n_bytes, exp["n_bytes"])
    bad.check(what, "n_bytes", int(t.n_bytes), exp["n_bytes"])
    bad.check(what, "stored offset", int(t.field.parts[5][0]), exp["offset"])
    bad.check(what, "data_offset", int(t.data_offset), int(reader.data_offset) + exp["offset"])
    if t.data_offset % reader.alignment != 0:
        bad.add(what, f"data_offset {t.data_offset} is not a multiple of {reader.alignment}")
    actual = t.data.tobytes()
    expected = bytes.fromhex(exp["data_hex"])
    if actual != expected:
        n = min(len(actual), len(expected))
        a = np.frombuffer(actual[:n], np.uint8)
        e = np.frombuffer(expected[:n], np.uint8)
        differ = np.flatnonzero(a != e)
        message = f"{differ.size} of {n} bytes differ"
        if differ.size:
            i = int(differ[0])
            message += f", first at byte {i}: {a[i]:#04x}, expected {e[i]:#04x}"
        if len(actual) != len(expected):
            message += f"; {len(actual)} bytes, expected {len(expected)}"
        bad.add(what, message)
    return len(bad.items) == n_before


def check_list(
    what: str,
    actual: dict[str, Any],
    expected: list[dict[str, Any]],
    key: str,
    check_one: Callable[[Any, dict[str, Any]], bool],
    bad: Mismatches,
) -> int:
    """Compares names (set and order) and then each item; returns how many are equal."""
    names = [e[key] for e in expected]
    for name in sorted(actual.keys() - set(names)):
        bad.add(f"{what} {name!r}", "in the file but not expected")
    for name in sorted(set(names) - actual.keys()):
        bad.add(f"{what} {name!r}", "expected but not in the file")
    common = [n for n in actual if n in set(names)]
    if common != [n for n in names if n in actual]:
        bad.add(f"{what}s", f"order is {common!r}, expected {names!r}")
    return sum(1 for e in expected if e[key] in actual and check_one(actual[e[key]], e))


def check_file(reader: Any, path: str, exp: dict[str, Any]) -> Mismatches:
    bad = Mismatches()
    print(f"reference: gguf {metadata.version('gguf')}, numpy {np.__version__}")
    print(f"file: {path} ({reader.data.size} bytes)")

    header = {
        "GGUF.version": exp["version"],
        "GGUF.tensor_count": len(exp["tensors"]),
        "GGUF.kv_count": len(exp["kv"]),
    }
    actual_header = {name: int(reader.fields[name].parts[0][0]) for name in PSEUDO_FIELDS}
    for name, value in header.items():
        bad.check("header", name, actual_header[name], value)
    version, n_tensors, n_kv = (actual_header[name] for name in PSEUDO_FIELDS)
    print(f"header: version {version}, {n_kv} keys, {n_tensors} tensors")

    bad.check("alignment", "GGUFReader.alignment", int(reader.alignment), exp["alignment"])
    bad.check("alignment", "GGUFReader.data_offset", int(reader.data_offset), exp["data_offset"])
    if reader.data_offset % exp["alignment"] != 0:
        bad.add("alignment", f"data section at {reader.data_offset} is not aligned")
    print(f"alignment: {int(reader.alignment)}, data section at {int(reader.data_offset)}")

    fields = {k: f for k, f in reader.fields.items() if k not in PSEUDO_FIELDS}
    n_kv = check_list("key", fields, exp["kv"], "key", lambda f, e: check_kv(f, e, bad), bad)
    print(f"keys: {n_kv} of {len(exp['kv'])} equal")

    tensors = {t.name: t for t in reader.tensors}
    if len(tensors) != len(reader.tensors):
        bad.add("tensors", "duplicate names")
    n_t = check_list(
        "tensor", tensors, exp["tensors"], "name", lambda t, e: check_tensor(reader, t, e, bad), bad
    )
    n_bytes = sum(int(t.n_bytes) for t in reader.tensors)
    print(f"tensors: {n_t} of {len(exp['tensors'])} equal, {n_bytes} bytes")
    return bad


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Compare a GGUF file, as gguf-py's GGUFReader reads it, with expected values."
    )
    parser.add_argument("gguf", help="the GGUF file to read")
    parser.add_argument("expected", help="the expected-values JSON")
    args = parser.parse_args()
    try:
        with open(args.expected, encoding="utf-8") as f:
            expected = json.load(f)
    except (OSError, ValueError) as e:
        print(f"error: cannot read {args.expected}: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        reader = GGUFReader(args.gguf)
    except OSError as e:
        print(f"error: cannot open {args.gguf}: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as e:  # noqa: BLE001 - whatever GGUFReader raises, it rejected the file
        print(f"MISMATCH GGUFReader rejects {args.gguf}: {e!r}", file=sys.stderr)
        return EXIT_MISMATCH
    try:
        bad = check_file(reader, args.gguf, expected)
    except (KeyError, TypeError, ValueError) as e:
        print(f"error: malformed {args.expected}: {e!r}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if bad.items:
        for item in bad.items:
            print(f"MISMATCH {item}", file=sys.stderr)
        n = len(bad.items)
        print(f"FAILED: {n} mismatch{'es' if n > 1 else ''}", file=sys.stderr)
        return EXIT_MISMATCH
    print("OK: GGUFReader reads every key and tensor as written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
