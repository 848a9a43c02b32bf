"""Silver training data: the training sentences annotated with WordNet-typed spans, merged with gold.

Why: ~50 human-labelled types are too few to teach a type space. WordNet gives every
noun and named instance in the training sentences a chain of hypernyms, so the same sentences carry
thousands of type phrases ("cello" → bowed stringed instrument, stringed instrument, musical
instrument, device; "Mekong" → river, stream, body of water).

What is annotated (see docs/silver.md for the rules and figures):

* **silver spans**: word n-grams (tokenizer words, as in ``indexer.spans``) that are WordNet noun
  lemmas, compounds first ("ice cream" before "ice"); inflections via morphy. Capitalised n-grams
  match proper lemmas (named instances: rivers, cities, people), lower-case ones common nouns. A
  word's sense is chosen among *all* its senses, nouns, verbs and adjectives alike: the sentence
  embedding against each sense's gloss embedding, with the SemCor tag counts as a prior — so
  "played" or "we play" picks a verb and gets no span. Common nouns keep a span only for concrete
  lexicographer files (artifacts, animals, people, food, places, ...) and specific senses.
* **types** of a span: the lemmas of its hypernyms (instance classes for named instances), nearest
  first, up to ``max_depth`` levels; abstract top synsets (entity, object, whole, group, ...) are
  skipped. The span's own synset is not a type (its lemma is the span's text).
* **gold spans** keep their readable phrase (``indexer/assets/phrases.json``) first, then the lemmas
  and hypernyms of the WordNet class that phrase names (politician → leader, person, ...), plus the
  types of a matching WordNet sense of the span's text when it sits under that class ("pizza",
  labelled food, gets dish and nutriment). Silver spans overlapping a gold span are dropped.
* **held-out types**: the dev evaluation types (CrossNER politics/literature, MultiCoNER medical),
  every lemma of every synset they name, and phrases containing them, never appear as types, so they
  stay unseen for ``nerindex eval``.

Output: JSONL, one sentence a line: ``{"id", "source", "text", "spans": [{"start", "end", "types",
"depths", "source": "gold"|"wordnet", "synset", "label"}]}``, and beside it ``*.hierarchy.json``:
for every type phrase used, its ancestors among the phrases used (descendants are the inverse), so
training can mask hierarchically related types (:class:`.hierarchy.TypeHierarchy`).

Modules: ``rules`` (word lists, gold anchors, :class:`SilverConfig`), ``records`` (the JSONL
records), ``annotator`` (finding and typing WordNet spans), ``glosses`` (gloss and sentence
vectors for sense choice), ``annotate`` (the three passes over a data set), ``hierarchy`` (the
``*.hierarchy.json`` file), ``report`` (summary figures); the command is ``indexer.cli.silver``.
"""
