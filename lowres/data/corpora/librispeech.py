"""LibriSpeech layout, including the Libri-light limited-supervision tree.

``speaker/chapter/speaker-chapter-NNNN.flac`` next to ``speaker-chapter.trans.txt`` ("ID TRANSCRIPT" per
line). Folders named ``dev*`` and ``test*`` hold dev and test sets; everything else is training data.
An audio file beside a transcript file that none of its lines names is reported (``no_transcript``).

Libri-light's ``librispeech_finetuning/`` gives the official subsets, used exactly as
``torchaudio.datasets.LibriLightLimited`` does: 10min = ``1h/0``, 1h = all of ``1h/{0..5}``,
10h = ``1h`` + ``9h``. Dev and test then come from LibriSpeech ``dev-*``/``test-*`` folders found inside
CORPUS or beside ``librispeech_finetuning`` (also in a sibling ``LibriSpeech/`` folder), or from
``--dev``/``--test``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from lowres.data.corpora.common import CorpusOptions, Record, Reject, iter_text_lines, walk_files

EXPECTED = (
    "expected speaker/chapter/*.flac with *.trans.txt files (LibriSpeech), or a librispeech_finetuning/ "
    "folder (Libri-light)."
)
FINETUNING = "librispeech_finetuning"
_AUDIO_ENDINGS = (".flac", ".wav", ".mp3", ".ogg", ".opus")


def _finetuning_root(root: Path) -> Path | None:
    if root.name == FINETUNING and root.is_dir():
        return root
    if (root / FINETUNING).is_dir():
        return root / FINETUNING
    return None


def detect(root: Path) -> bool:
    if not root.is_dir():
        return False
    if _finetuning_root(root) is not None:
        return True
    # a *.trans.txt within a few levels (speaker/chapter or set/speaker/chapter)
    for _dirpath, _dirnames, filenames in _bounded_walk(root, 4):
        if any(name.endswith(".trans.txt") for name in filenames):
            return True
    return False


def _bounded_walk(root: Path, max_depth: int):
    base = len(root.parts)
    for dirpath, dirnames, filenames in os.walk(root):
        if len(Path(dirpath).parts) - base >= max_depth:
            dirnames[:] = []
        dirnames.sort()
        yield dirpath, dirnames, filenames


def _split_of(rel_parts: tuple[str, ...]) -> tuple[str, str]:
    """Split from the set folders above speaker/chapter/file (e.g. ``dev-clean``)."""
    for part in rel_parts[:-3]:
        low = part.lower()
        if low.startswith("dev"):
            return "dev", part
        if low.startswith("test"):
            return "test", part
    return "train", rel_parts[0] if len(rel_parts) > 3 else ""


def _librilight_tags(rel_parts: tuple[str, ...]) -> frozenset:
    # rel_parts relative to librispeech_finetuning: ("1h", "0", "clean", spk, chap, file) or ("9h", ...)
    if rel_parts and rel_parts[0] == "1h":
        if len(rel_parts) > 1 and rel_parts[1] == "0":
            return frozenset({"10min", "1h", "10h"})
        return frozenset({"1h", "10h"})
    if rel_parts and rel_parts[0] == "9h":
        return frozenset({"10h"})
    return frozenset()


def _heldout_dirs(root: Path, ft: Path | None) -> list[Path]:
    """dev*/test* folders beside the fine-tuning tree, or beside CORPUS when it is one train* set."""
    if ft is not None:
        places = [ft.parent, ft.parent / "LibriSpeech"]
    elif root.name.lower().startswith("train"):
        places = [root.parent]
    else:
        return []
    found = []
    for place in places:
        if not place.is_dir() or place.resolve() == root.resolve():
            continue
        for child in sorted(place.iterdir()):
            if child.is_dir() and child.name.lower().startswith(("dev", "test")):
                found.append(child)
    return found


def parse(root: Path, opts: CorpusOptions) -> Iterator[Record | Reject]:
    root = root.resolve()
    ft = _finetuning_root(root)
    explicit = [(d, "dev") for d in opts.dev_dirs] + [(d, "test") for d in opts.test_dirs]
    trees: list[tuple[Path, str | None]] = [(root, None)]
    if not explicit:
        for d in _heldout_dirs(root, ft):
            if not _inside(d, root):
                trees.append((d, "dev" if d.name.lower().startswith("dev") else "test"))
    for d, split in explicit:
        if not Path(d).is_dir():
            yield Reject(str(d), "missing_folder", f"--{split} folder not found")
            continue
        trees.append((Path(d).resolve(), split))
    for tree, forced_split in trees:
        yield from _parse_tree(tree, forced_split, ft, explicit_heldout=bool(explicit))


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root)
        return True
    except ValueError:
        return False


def _parse_tree(tree: Path, forced_split: str | None, ft: Path | None, explicit_heldout: bool):
    claimed: dict[Path, set[str]] = {}  # folder of a transcript file -> the audio files its lines name
    for trans in walk_files(tree, names_end=".trans.txt"):
        rel = trans.relative_to(tree).parts
        if forced_split:
            split, group = forced_split, tree.name
        else:
            split, group = _split_of(rel)
            if explicit_heldout and split != "train":
                continue  # --dev/--test replace the dev/test folders found in the tree
        tags: frozenset = frozenset()
        if ft is not None and _inside(trans, ft):
            split, group = "train", FINETUNING
            tags = _librilight_tags(trans.relative_to(ft.resolve()).parts)
        folder = trans.parent
        names = claimed.setdefault(folder, set())
        speaker_dir = folder.parent.name
        for lineno, line, reason, detail in iter_text_lines(trans):
            where = f"{trans}:{lineno}"
            if line is None:
                yield Reject(where, reason, detail)
                continue
            if not line.strip():
                continue
            parts = line.strip().split(maxsplit=1)
            utt_id = parts[0]
            text = parts[1] if len(parts) > 1 else ""
            audio = _find_audio(folder, utt_id)
            names.add(audio.name)
            speaker = utt_id.split("-")[0] if "-" in utt_id else speaker_dir
            yield Record(id=utt_id, audio=audio, text=text, source=where, speaker=speaker, split=split,
                         group=group, tags=tags)
    for folder, names in claimed.items():  # audio beside a transcript file that no line names
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in _AUDIO_ENDINGS and path.name not in names and not path.name.startswith("."):
                yield Reject(str(path), "no_transcript", f"no line of the *.trans.txt beside it names {path.stem!r}",
                             id=path.stem)


def _find_audio(folder: Path, utt_id: str) -> Path:
    for ending in _AUDIO_ENDINGS:
        candidate = folder / (utt_id + ending)
        if candidate.exists():
            return candidate
    return folder / (utt_id + ".flac")  # missing: prepare reports it
