"""Issue 13 research: ``nerindex eval`` with candidate spans that are a word of the unseen type
template left out at encoding.

Unseen phrases are embedded as "the name of a {}" (``unseen_type_template``), so a passage's
candidate span "name" (or "names") is close to every unseen query: a dogfooding audit found it
ranking all 12 passages of the nonsense type "zzqx" and 41 of the 245 ranked for "chemical". This
runs the eval with such candidates dropped (mentions are kept, so the ``--all`` sets and the marks
do not change; only rankings can), to compare with a plain run on the validation split first.

    python docs/eval/template_word_candidates.py drop  eval DATA... [eval options]
    python docs/eval/template_word_candidates.py keep  eval DATA... [eval options]   # the baseline
"""

from __future__ import annotations

import dataclasses
import sys

from indexer.cli import main
from indexer.encoder import OnnxEncoder


def template_words(template: str) -> set[str]:
    """The words of a type template and their plurals ("name", "names", "the", "of", "a", ...)."""
    words = {w.lower() for w in template.replace("{}", " ").split()}
    return words | {w + "s" for w in words}


def dropping_encode(real):  # type: ignore[no-untyped-def]
    """``OnnxEncoder.encode`` without the candidate spans that are a word of the unseen template."""

    def encode(self, passages, *args, **kwargs):  # type: ignore[no-untyped-def]
        drop = template_words(self.info.unseen_type_template or "")
        return [dataclasses.replace(p, spans=tuple(s for s in p.spans if s.mention or s.text.strip().lower() not in drop))
                for p in real(self, passages, *args, **kwargs)]

    return encode


if __name__ == "__main__":
    if sys.argv[1:] in (["-h"], ["--help"]):  # the usage, and exit 0 (an audit: --help exited 1)
        print(__doc__)
        sys.exit(0)
    if len(sys.argv) < 3 or sys.argv[1] not in ("drop", "keep"):
        sys.exit(__doc__)
    if sys.argv[1] == "drop":
        OnnxEncoder.encode = dropping_encode(OnnxEncoder.encode)  # type: ignore[method-assign]
    main(sys.argv[2:])
