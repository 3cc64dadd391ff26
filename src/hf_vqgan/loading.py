"""Checks that turn a missing, empty, truncated or corrupt file into one error naming the file and what is wrong.

diffusers and transformers report a damaged folder in their own words, or not at all: a truncated safetensors file
gives `SafetensorError: incomplete metadata` without its name, a prior folder without `config.json` is silently
built from a default GPT-2 config, an unreadable `generation_config.json` is dropped, a folder missing a pipeline
component makes diffusers load the root in its place. The `from_pretrained` entry points of this package run these
checks on a local folder first (a Hub id is checked once it is downloaded); they read headers and JSON only, never
the tensors, so a healthy folder loads as fast as before.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

# Model classes by the weights file stem their library saves; a folder of either kind holds `config.json`.
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model"
TRANSFORMERS_WEIGHTS = "model"


class CorruptFileError(OSError):
    """A file that exists but cannot be what it claims to be (empty, truncated, not JSON, not safetensors).

    An `OSError`, as the libraries' own loading errors are, so existing `except OSError` handlers still apply."""


def _describe(path: Path) -> str:
    return f"{path} ({path.stat().st_size:,} bytes)"


def read_json_file(path: str | os.PathLike, what: str = "JSON file") -> dict:
    """Read a JSON object from `path`; raise `CorruptFileError` naming the file if it is empty, not text, not JSON
    (say, cut short) or not an object."""
    path = Path(path)
    data = path.read_bytes()
    if not data.strip():
        raise CorruptFileError(f"{what} {path} is empty: the save that wrote it did not finish. Save it again.")
    try:
        content = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise CorruptFileError(f"{what} {_describe(path)} is not UTF-8 text: the file is corrupt.") from err
    except json.JSONDecodeError as err:
        raise CorruptFileError(
            f"{what} {_describe(path)} is not valid JSON ({err.msg}: line {err.lineno}, column {err.colno}): "
            "the file is truncated or corrupt. Save it again."
        ) from err
    if not isinstance(content, dict):
        raise CorruptFileError(f"{what} {path} holds a JSON {type(content).__name__}, not an object.")
    return content


def check_safetensors_file(path: str | os.PathLike) -> None:
    """Check a safetensors file's framing without reading its tensors: an 8-byte header length, a JSON header, and
    tensor data that ends exactly at the end of the file. Raise `CorruptFileError` naming the file otherwise."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise CorruptFileError(f"{_describe(path)} is too short to be a safetensors file: empty or cut short.")
        header_length = int.from_bytes(prefix, "little")
        if header_length > size - 8:
            raise CorruptFileError(
                f"{_describe(path)} is not a complete safetensors file: its header alone should take "
                f"{header_length:,} bytes. The file is truncated or is not safetensors."
            )
        header = f.read(header_length)
    try:
        entries = json.loads(header.decode("utf-8"))
        ends = [entry["data_offsets"][1] for key, entry in entries.items() if key != "__metadata__"]
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError, KeyError, IndexError, TypeError) as err:
        raise CorruptFileError(f"{_describe(path)} has a corrupt safetensors header: the file is damaged.") from err
    expected = 8 + header_length + max(ends, default=0)
    if size != expected:
        state = "truncated" if size < expected else "longer than its header describes"
        raise CorruptFileError(
            f"{_describe(path)} is {state}: its header describes {expected:,} bytes. Save or download it again."
        )


def _pipeline_components(folder: Path) -> dict[str, str]:
    """Component name -> class name of the pipeline folder `folder` (entries of its model_index.json)."""
    index = read_json_file(folder / "model_index.json", "pipeline index")
    return {
        name: value[1]
        for name, value in index.items()
        if not name.startswith("_") and isinstance(value, list) and len(value) == 2 and value[1] is not None
    }


def _root_hint(folder: Path, class_name: str, config_name: str) -> str:
    """Why `folder` holds no `config_name`: a pipeline root (name the subfolder to pass) or another folder."""
    if (folder / "model_index.json").is_file():
        components = _pipeline_components(folder)
        matching = [name for name, kind in components.items() if kind == class_name]
        if matching:
            others = f" (or {', '.join(repr(name) for name in matching[1:])})" if matching[1:] else ""
            return (
                f"{folder} is a pipeline folder, not a {class_name} folder: did you mean "
                f"`{class_name}.from_pretrained({str(folder)!r}, subfolder={matching[0]!r})`{others}?"
            )
        return f"{folder} is a pipeline folder whose components {sorted(components)} hold no {class_name}."
    present = sorted(entry.name for entry in folder.iterdir())[:10]
    return f"{folder} holds no {config_name}, so it is not a {class_name} folder (it holds {present})."


def check_model_folder(
    path: str | os.PathLike,
    subfolder: str | None,
    class_name: str,
    config_name: str = "config.json",
    weights_name: str | None = None,
) -> None:
    """
    Check a local model folder before a library loads it; a Hub id (not a local directory) is left alone.

    Args:
        path: what was passed to `from_pretrained`.
        subfolder: its `subfolder` argument, if any.
        class_name: the class being loaded, for the messages.
        config_name: the config file the class reads.
        weights_name: the weights file stem (`DIFFUSERS_WEIGHTS`, `TRANSFORMERS_WEIGHTS`); `None` for config-only
            classes.

    Raises:
        FileNotFoundError: the config, weights, a weights shard or the subfolder is missing (a pipeline root given
            without `subfolder` is named as such, with the subfolder to pass).
        CorruptFileError: a JSON file of the folder is empty or not JSON, or a safetensors file is not complete.
    """
    root = Path(os.fspath(path))
    if not root.is_dir():
        return
    folder = root / subfolder if subfolder else root
    if not folder.is_dir():
        hint = (
            f" Its components: {sorted(_pipeline_components(root))}." if (root / "model_index.json").is_file() else ""
        )
        raise FileNotFoundError(f"{root} has no subfolder {subfolder!r} to load a {class_name} from.{hint}")
    if not (folder / config_name).is_file():
        raise FileNotFoundError(_root_hint(folder, class_name, config_name))
    for json_file in sorted(folder.glob("*.json")):
        read_json_file(json_file)
    if weights_name is None:
        return
    index_file = folder / f"{weights_name}.safetensors.index.json"
    if index_file.is_file():
        shards = sorted(set(read_json_file(index_file).get("weight_map", {}).values()))
        for shard in shards:
            if not (folder / shard).is_file():
                raise FileNotFoundError(f"{index_file} names the weights shard {shard}, which is missing.")
    weights = sorted(folder.glob("*.safetensors"))
    if not weights and not list(folder.glob("*.bin")):
        raise FileNotFoundError(
            f"{folder} has {config_name} but no weights: expected {weights_name}.safetensors. Save the model again."
        )
    for weights_file in weights:
        check_safetensors_file(weights_file)


def check_pipeline_folder(path: str | os.PathLike) -> None:
    """Check a local pipeline folder: a readable model_index.json and a folder for every component it names
    (diffusers would otherwise load the root in place of a missing component). The components' own files are
    checked when each is loaded."""
    root = Path(os.fspath(path))
    if not (root / "model_index.json").is_file():
        if (root / "config.json").is_file():
            raise FileNotFoundError(
                f"{root} has no model_index.json: it is a single model's folder (config.json), not a pipeline. "
                "Load it with its model class (VQGANModel.from_pretrained, VQGANPriorForCausalLM.from_pretrained)."
            )
        return  # diffusers says what is missing
    for name, class_name in _pipeline_components(root).items():
        if not (root / name).is_dir():
            raise FileNotFoundError(
                f"The pipeline folder {root} is missing its component folder {root / name} ({class_name}, named in "
                "model_index.json). Copy or save the full pipeline again."
            )


def pickle_is_complete(path: str | os.PathLike) -> bool:
    """Whether `path` is a whole `torch.save` pickle: the zip format with intact members and a `data.pkl` that
    parses to its STOP opcode, or the legacy format's five pickles (magic number, protocol, system info, the object,
    its storage keys). The opcodes are only parsed (`pickletools`), never executed."""
    import io
    import pickletools
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                members = [name for name in archive.namelist() if name.rsplit("/", 1)[-1] == "data.pkl"]
                if len(members) != 1 or archive.testzip() is not None:
                    return False
                stream, num_pickles = io.BytesIO(archive.read(members[0])), 1
        else:
            stream, num_pickles = io.BytesIO(Path(path).read_bytes()), 5
        for _ in range(num_pickles):
            for _ in pickletools.genops(stream):
                pass
    except (ValueError, EOFError, OSError, zipfile.BadZipFile, UnicodeDecodeError):
        return False
    return True
