"""Read back what an offline W&B run logged, from its run-*.wandb file.

The file is a LevelDB-style log (7-byte file header, 32 KiB blocks, records split into
FULL/FIRST/MIDDLE/LAST chunks with 7-byte headers) of wandb's protobuf `Record`s. wandb 0.31
keeps no Python reader for it, and offline runs write no wandb-summary.json, so the tests
parse it themselves to prove the run really holds the metrics.
"""

import json
import struct
from pathlib import Path

BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path):
    from wandb.proto import wandb_internal_pb2 as pb

    raw = Path(path).read_bytes()
    assert raw[:4] == b":W&B", "not a wandb run file"
    pos, buf = 7, b""
    while pos + 7 <= len(raw):
        room = BLOCK - pos % BLOCK
        if room < 7:  # block trailer: padding
            pos += room
            continue
        _crc, length, kind = struct.unpack("<IHB", raw[pos : pos + 7])
        if kind == 0 and length == 0:
            pos += room
            continue
        data = raw[pos + 7 : pos + 7 + length]
        pos += 7 + length
        buf = data if kind in (FULL, FIRST) else buf + data
        if kind in (FULL, LAST):
            r = pb.Record()
            r.ParseFromString(buf)
            yield r


def run_file(run_dir: Path) -> Path:
    files = list(Path(run_dir).glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1, files
    return files[0]


def summary_and_history(run_dir: Path):
    """(summary dict, set of history keys, config dict) of the job's offline run."""
    summary, history_keys, config = {}, set(), {}
    for r in records(run_file(run_dir)):
        kind = r.WhichOneof("record_type")
        if kind == "summary":
            for item in r.summary.update:
                key = item.key or "/".join(item.nested_key)
                summary[key] = json.loads(item.value_json)
        elif kind == "history":
            history_keys.update(i.key or "/".join(i.nested_key) for i in r.history.item)
        elif kind == "config":
            for item in r.config.update:
                config[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        elif kind == "run":
            for item in r.run.config.update:
                config[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
            config.update({"_run_name": r.run.display_name, "_group": r.run.run_group})
            config["_tags"] = list(r.run.tags)
    return summary, history_keys, config


def logged_table(run_dir: Path, key: str) -> dict:
    """The columns and data of the W&B Table logged under `key` (from the run's files)."""
    for r in records(run_file(run_dir)):
        if r.WhichOneof("record_type") == "history":
            for i in r.history.item:
                if list(i.nested_key) == [key, "path"]:
                    files = run_file(run_dir).parent / "files"
                    return json.loads((files / json.loads(i.value_json)).read_text())
    raise AssertionError(f"no table logged under {key!r}")
