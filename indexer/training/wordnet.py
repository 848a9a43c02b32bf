"""WordNet 3.0 read straight from Debian's dict files: the synsets, lemma index and sense counts.

Why not NLTK's reader: silver-data generation needs only the data/index files, a morphological
normaliser and the tagged sense counts, which this module reads in ~2 s with no extra dependency.
NLTK's reader would also need a ``lexnames`` file the Debian packages do not ship, and its path
sandbox refuses folders outside ``nltk.data.path``. The lexicographer file names (lexnames(5)) are
the fixed WordNet 3.0 table below, so nothing has to be written anywhere.

Where the files are: ``NERINDEX_WORDNET`` or ``WNSEARCHDIR`` if set, else the Debian location
``/usr/share/wordnet`` (packages ``wordnet-base`` and ``wordnet-sense-index``). ``index.sense``
(from ``wordnet-sense-index``) gives the SemCor tag counts used as the sense prior; without it the
prior falls back to WordNet's sense order.
"""

from __future__ import annotations

import logging
import os
import re
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal

from ..errors import NerindexError

log = logging.getLogger(__name__)

APT_PACKAGES = ("wordnet-base", "wordnet-sense-index")
APT_INSTALL = "apt-get update && apt-get install -y " + " ".join(APT_PACKAGES)
SEARCH_DIRS = ("/usr/share/wordnet", "/usr/share/wordnet/dict", "/usr/local/WordNet-3.0/dict")

Pos = Literal["n", "v", "a", "r"]
POS_FILES = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}

# lexnames(5) of WordNet 3.0: lexicographer file number -> name (the 45 lines of the man page)
LEXNAMES = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact",
    "noun.attribute", "noun.body", "noun.cognition", "noun.communication", "noun.event",
    "noun.feeling", "noun.food", "noun.group", "noun.location", "noun.motive", "noun.object",
    "noun.person", "noun.phenomenon", "noun.plant", "noun.possession", "noun.process",
    "noun.quantity", "noun.relation", "noun.shape", "noun.state", "noun.substance", "noun.time",
    "verb.body", "verb.change", "verb.cognition", "verb.communication", "verb.competition",
    "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
    "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather", "adj.ppl",
)  # fmt: skip

# morphy's detachment rules (wnintro(3WN) / morph.c), per part of speech
_SUFFIXES: dict[str, tuple[tuple[str, str], ...]] = {
    "n": (("s", ""), ("ses", "s"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"),
          ("men", "man"), ("ies", "y")),
    "v": (("s", ""), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""), ("ing", "e"),
          ("ing", "")),
    "a": (("er", ""), ("est", ""), ("er", "e"), ("est", "e")),
    "r": (),
}  # fmt: skip


class WordNetMissingError(NerindexError):
    """WordNet's dict files are not installed where we look: a setting (--wordnet, NERINDEX_WORDNET)
    or a package to install, exit 2 (a CLI audit: 1, an unexpected error's)."""

    exit_code = 2


@dataclass(frozen=True, slots=True)
class Synset:
    """One synset: its lemmas as written (spaces for underscores), gloss and hypernym links."""

    key: tuple[str, int]  # (pos, offset): unique across parts of speech
    lexname: str
    lemmas: tuple[str, ...]
    gloss: str
    hypernyms: tuple[int, ...]  # noun/verb offsets, same part of speech
    instance_of: tuple[int, ...]  # for named instances: the classes they are instances of
    name: str  # NLTK-style "cello.n.01" (first lemma, its sense number)

    @property
    def pos(self) -> str:
        return self.key[0]

    @property
    def offset(self) -> int:
        return self.key[1]

    @property
    def is_instance(self) -> bool:
        return bool(self.instance_of)

    @property
    def definition(self) -> str:
        """The gloss without its quoted examples."""
        return self.gloss.split('; "')[0].strip()


def find_wordnet_dir(path: str | os.PathLike | None = None) -> Path:
    """The folder holding ``data.noun`` and friends; a clear error naming the packages if none.

    A ``path`` given, or else ``NERINDEX_WORDNET``, is the only place looked at: silver data built
    from another WordNet than the one asked for would differ without a word."""
    candidates: list[str] = []
    # a folder asked for (--wordnet, or NERINDEX_WORDNET) is the only one looked at
    asked, source = (path, "") if path else (os.environ.get("NERINDEX_WORDNET"), " (NERINDEX_WORDNET)")
    if asked:
        p = Path(asked)
        if (p / "data.noun").is_file() and (p / "index.noun").is_file():
            return p
        raise WordNetMissingError(f"{p}{source}: no WordNet 3.0 dict folder here (data.noun and index.noun)")
    if os.environ.get("WNSEARCHDIR"):
        candidates.append(os.environ["WNSEARCHDIR"])
    candidates.extend(SEARCH_DIRS)
    for c in candidates:
        p = Path(c)
        if (p / "data.noun").is_file() and (p / "index.noun").is_file():
            return p
    raise WordNetMissingError(
        "WordNet 3.0 is not installed (looked for data.noun in "
        + ", ".join(candidates)
        + f"). On Debian/Ubuntu: {APT_INSTALL}; or set NERINDEX_WORDNET to a WordNet dict folder."
    )


def wordnet_available(path: str | os.PathLike | None = None) -> bool:
    try:
        find_wordnet_dir(path)
        return True
    except WordNetMissingError:
        return False


def humanize(lemma: str) -> str:
    """WordNet's lemma spelling -> a phrase: underscores to spaces, adjective markers dropped."""
    return re.sub(r"\([a-z]+\)$", "", lemma).replace("_", " ")


class WordNet:
    """Synsets of all parts of speech, the lemma index, sense counts and morphological lookup."""

    def __init__(
        self,
        synsets: dict[tuple[str, int], Synset],
        index: dict[str, dict[str, tuple[int, ...]]],
        exceptions: dict[str, dict[str, tuple[str, ...]]],
        counts: dict[tuple[str, tuple[str, int]], int],
        folder: Path,
    ) -> None:
        self.synsets = synsets
        self.index = index  # pos -> lowercase lemma (spaces) -> offsets in sense order
        self.exceptions = exceptions  # pos -> inflected form -> base forms
        self.counts = counts  # (lowercase lemma, synset key) -> SemCor tag count
        self.folder = folder
        self._depth: dict[int, int] = {}

    # ---------------------------------------------------------------- loading

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, *, pos: Iterable[str] = "nvar") -> "WordNet":
        """Read the dict files (nouns always; verbs/adjectives/adverbs as asked)."""
        folder = find_wordnet_dir(path)
        wanted = sorted(set(pos) | {"n"})
        raw: dict[tuple[str, int], tuple] = {}
        index: dict[str, dict[str, tuple[int, ...]]] = {}
        exceptions: dict[str, dict[str, tuple[str, ...]]] = {}
        missing = [f"{kind}.{POS_FILES[p]}" for p in wanted for kind in ("index", "data")
                   if not (folder / f"{kind}.{POS_FILES[p]}").is_file()]  # fmt: skip
        if missing:  # e.g. a nouns-only copy: the silver annotator weighs verb and adjective senses too
            raise WordNetMissingError(f"{folder}: WordNet's {', '.join(missing)} missing (install {APT_PACKAGES[0]}: {APT_INSTALL})")
        for p in wanted:
            stem = POS_FILES[p]
            index[p] = _read_index(folder / f"index.{stem}")
            exceptions[p] = _read_exceptions(folder / f"{stem}.exc")
            for key, rec in _read_data(folder / f"data.{stem}", p):
                raw[key] = rec
        # sense numbers of each synset's first lemma: its position in that lemma's index entry
        synsets: dict[tuple[str, int], Synset] = {}
        for key, (lexnum, lemmas, gloss, hyper, inst) in raw.items():
            p = key[0]
            first = lemmas[0].lower()
            offs = index[p].get(first, ())
            sense = offs.index(key[1]) + 1 if key[1] in offs else 1
            name = f"{first.replace(' ', '_')}.{p}.{sense:02d}"
            lexname = LEXNAMES[lexnum] if 0 <= lexnum < len(LEXNAMES) else str(lexnum)
            synsets[key] = Synset(key, lexname, lemmas, gloss, hyper, inst, name)
        counts = _read_sense_counts(folder / "index.sense", set(wanted))
        if not counts:
            log.warning("no %s: sense prior falls back to WordNet's sense order (install %s)",
                        folder / "index.sense", APT_PACKAGES[1])  # fmt: skip
        log.info("WordNet from %s: %d synsets", folder, len(synsets))
        return cls(synsets, index, exceptions, counts, folder)

    # ---------------------------------------------------------------- lookup

    def noun(self, offset: int) -> Synset:
        return self.synsets[("n", offset)]

    def by_name(self, name: str) -> Synset:
        """The synset called e.g. ``"cello.n.01"``."""
        lemma, p, num = name.rsplit(".", 2)
        offs = self.index[p].get(lemma.replace("_", " ").lower(), ())
        i = int(num) - 1
        if not 0 <= i < len(offs):
            raise KeyError(name)
        return self.synsets[(p, offs[i])]

    def base_forms(self, word: str, pos: str) -> list[str]:
        """Lemmas in the index that ``word`` (lowercase) may be an inflection of: morphy's rules."""
        idx = self.index.get(pos, {})
        out: list[str] = []
        for base in self.exceptions.get(pos, {}).get(word, ()):
            if base in idx and base not in out:
                out.append(base)
        if word in idx and word not in out:
            out.append(word)
        for suffix, repl in _SUFFIXES[pos]:
            if word.endswith(suffix) and len(word) > len(suffix) + 1:
                base = word[: len(word) - len(suffix)] + repl
                if base in idx and base not in out:
                    out.append(base)
        return out

    def senses(self, lemma: str, pos: str) -> list[Synset]:
        """Synsets of an index lemma (lowercase, spaces), in WordNet's sense order."""
        return [self.synsets[(pos, o)] for o in self.index.get(pos, {}).get(lemma, ())]

    def count(self, lemma: str, synset: Synset) -> int:
        return self.counts.get((lemma, synset.key), 0)

    # ---------------------------------------------------------------- hierarchy (nouns)

    def parents(self, synset: Synset) -> list[Synset]:
        """Hypernyms, or for a named instance the classes it is an instance of."""
        p = synset.pos
        return [self.synsets[(p, o)] for o in synset.hypernyms + synset.instance_of]

    def min_depth(self, synset: Synset) -> int:
        """Shortest hypernym path to a root (entity.n.01 has depth 0)."""
        off = synset.offset
        if synset.pos == "n" and off in self._depth:
            return self._depth[off]
        parents = self.parents(synset)
        d = 0 if not parents else 1 + min(self.min_depth(q) for q in parents)
        if synset.pos == "n":
            self._depth[off] = d
        return d

    def ancestor_levels(self, synset: Synset, *, max_levels: int) -> list[list[Synset]]:
        """Ancestors by distance: ``[level 1 (parents), level 2, ...]``, each synset at its nearest level."""
        seen = {synset.key}
        levels: list[list[Synset]] = []
        frontier = [synset]
        for _ in range(max_levels):
            nxt: list[Synset] = []
            for s in frontier:
                for q in self.parents(s):
                    if q.key not in seen:
                        seen.add(q.key)
                        nxt.append(q)
            if not nxt:
                break
            levels.append(nxt)
            frontier = nxt
        return levels

    def all_ancestors(self, synset: Synset) -> set[tuple[str, int]]:
        """Keys of every hypernym (transitively), instance classes included."""
        out: set[tuple[str, int]] = set()
        queue = deque(self.parents(synset))
        while queue:
            s = queue.popleft()
            if s.key in out:
                continue
            out.add(s.key)
            queue.extend(self.parents(s))
        return out

    def noun_synsets(self) -> Iterable[Synset]:
        return (s for s in self.synsets.values() if s.pos == "n")


# -------------------------------------------------------------------- file readers


def _read_index(path: Path) -> dict[str, tuple[int, ...]]:
    """``index.pos``: lemma -> synset offsets in sense order (most frequent first)."""
    out: dict[str, tuple[int, ...]] = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("  "):
                continue  # licence header
            parts = line.split()
            lemma = parts[0].replace("_", " ")
            synset_cnt = int(parts[2])
            out[lemma] = tuple(int(o) for o in parts[len(parts) - synset_cnt :])
    return out


def _read_exceptions(path: Path) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    if not path.is_file():
        return out
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) >= 2:
                out[parts[0].replace("_", " ")] = tuple(b.replace("_", " ") for b in parts[1:])
    return out


def _read_data(path: Path, pos: str):
    """``data.pos`` (wndb(5)): yields (key, (lexnum, lemmas, gloss, hypernyms, instance_of))."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("  "):
                continue
            head, _, gloss = line.partition(" | ")
            f = head.split()
            offset, lexnum = int(f[0]), int(f[1])
            n_words = int(f[3], 16)
            lemmas = tuple(humanize(f[4 + 2 * i]) for i in range(n_words))
            i = 4 + 2 * n_words
            n_ptr = int(f[i])
            i += 1
            hyper: list[int] = []
            inst: list[int] = []
            for _ in range(n_ptr):
                sym, off = f[i], int(f[i + 1])
                if sym == "@":
                    hyper.append(off)
                elif sym == "@i":
                    inst.append(off)
                i += 4
            # satellite adjectives ("s") share the adjective index
            yield (pos, offset), (lexnum, lemmas, gloss.strip(), tuple(hyper), tuple(inst))


_SS_TYPE = {"1": "n", "2": "v", "3": "a", "4": "r", "5": "a"}


def _read_sense_counts(path: Path, wanted: set[str]) -> dict[tuple[str, tuple[str, int]], int]:
    """``index.sense``: (lemma, synset key) -> SemCor tag count (zeros left out)."""
    out: dict[tuple[str, tuple[str, int]], int] = {}
    if not path.is_file():
        return out
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) < 4 or parts[3] == "0":
                continue
            sense_key, offset = parts[0], int(parts[1])
            lemma, _, lex = sense_key.partition("%")
            p = _SS_TYPE.get(lex[:1])
            if p in wanted:
                out[(lemma.replace("_", " "), (p, offset))] = int(parts[3])
    return out
