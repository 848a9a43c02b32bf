"""ONNX inference: passages → detected spans with vectors; type phrases → type vectors.

This is the runtime path (onnxruntime + tokenizers + numpy; no torch). The execution provider is
chosen in exactly one place (:func:`choose_provider`): CUDA when onnxruntime offers it, else CPU.
Passages longer than the encoder window are cut into overlapping windows at word boundaries
(``indexer.spans``) and every candidate span is scored by exactly one window, so nothing is
silently truncated. On CUDA work is batched by length to keep padding small. On the CPU every
window is a graph call of its own (the int8 graph's activation scales are per call, so batching
would make a passage's outputs depend on its neighbours), and the windows are spread over worker
threads, each call on one core; the graph runs in stages (``indexer.staged``): every candidate is
scored, only those passing the detection threshold are embedded.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Sequence

import numpy as np

from .catalog import Catalog
from .config import cache_folder
from .errors import InputError, ModelError, SearchError
from .model_folder import CANDIDATE_OUTPUT, CARD_FILE, ModelInfo
from .records import EncodedPassage, EncodedSpan, Passage
from .runtime import (
    CPU,
    CUDA,
    check_io,
    choose_provider,
    graph_for,
    load_tokenizer,
    open_cuda_session,
    open_session,
    ordered_map,
    runtime_conflict,
    usable_cores,
)
from .spans import Word, decode_spans, window_inputs, words_from_encoding
from .stage_loading import load_stages
from .staged import SpanBatch, StagedGraph
from .type_side import check_fits, embed_texts, load_catalog, type_text

log = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "cuda"]
# Upper bound on candidate spans in one session call: keeps the [B, S, D] outputs to ~100 MB.
MAX_SPANS_PER_BATCH = 16384
TYPE_CACHE_SIZE = 4096  # type phrases kept embedded (queries repeat)


# a detected span: (start, end, score, candidate score or None, vector, base vector or None), character offsets
_Candidate = tuple[int, int, float, "float | None", np.ndarray, "np.ndarray | None"]
# a span of a batch that passes detection: (row, index among its window's spans, score, candidate score, vector, base)
_Hit = tuple[int, int, float, "float | None", np.ndarray, "np.ndarray | None"]


@dataclass
class _Item:
    """One window of one passage, ready to batch."""

    passage: int
    ids: list[int]
    spans: np.ndarray  # [n, 2] first and last token index of each candidate into ids
    chars: np.ndarray  # [n, 2] character offsets of each candidate in the passage


def batches_windows(info: ModelInfo, provider: str, graph_path: Path) -> bool:
    """Whether windows may run batched: only the fp16 graph (``graphs.cuda``) on CUDA; the int8
    graph quantises activations per call, on any provider (``OnnxEncoder.window_calls``)."""
    return provider == CUDA and "cuda" in info.graphs and graph_path == graph_for(info, CUDA)


class OnnxEncoder:
    """Runs a model folder's graph. Build with :meth:`from_dir`; the constructor does no I/O."""

    def __init__(
        self,
        info: ModelInfo,
        session: object,
        tokenizer: object,
        *,
        provider: str,
        catalog: Catalog | None = None,
        stages: Callable[[], StagedGraph | None] | None = None,
        workers: int = 1,
        window_calls: bool | None = None,
    ) -> None:
        """``stages`` builds the staged runner of the same graph on first use (indexing only: a
        process that only embeds type phrases never pays for cutting the graph); without it every
        batch runs the whole graph through ``session``. ``workers``: threads that run windows at
        once on the CPU (:func:`ordered_map`), each call on one onnxruntime thread."""
        self.info = info
        self.session = session
        self.tokenizer = tokenizer
        self.provider = provider
        self.catalog = catalog
        self._load_stages = stages
        self._stages: StagedGraph | None = None
        self._stages_lock = threading.Lock()  # the window workers' first calls come together
        special = tokenizer.encode("", add_special_tokens=True).ids
        if len(special) < 2:
            raise ModelError(f"{info.path}: tokenizer adds no [CLS]/[SEP]-style special tokens")
        self._prefix, self._suffix = special[:1], special[1:]
        self._type_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        # the CPU graph quantises activations with one int8 scale per call (DynamicQuantizeLinear):
        # windows batched together would change each other's spans and vectors (cosine down to
        # 0.97, spans kept or dropped at the detection threshold), so a passage's index would depend
        # on its neighbours and on --batch-size. On the CPU each window runs alone, as each type
        # phrase does (embed_texts); batches are for CUDA's fp16 graph, which has no such step
        # (``window_calls`` False; None: on the CPU only). The int8 graph on CUDA, in a folder with
        # no fp16 one, runs window by window too (an audit: spans came and went with the batch).
        self.window_calls = provider == CPU if window_calls is None else window_calls
        self.workers = max(1, workers) if self.window_calls else 1

    @classmethod
    def from_dir(
        cls,
        path: str | Path | None = None,
        *,
        device: Device | str = "auto",
        graph: str | None = None,
        catalog: str | Path | None = None,
        threads: int | None = None,
    ) -> "OnnxEncoder":
        """Load a model folder: verify it, open the graph, check its input and output names.

        ``threads``: the cores to use (default: all). On the CPU that many windows run at once, each
        in a one-thread call: one window's matrices are too small for onnxruntime's threads to pay
        (two threads on one call: 1.4x the time of two calls side by side, BENCHMARKS.md).
        """
        conflict = runtime_conflict()
        if conflict is not None:
            raise ModelError(conflict)
        import onnxruntime as ort

        info = ModelInfo.load(path)
        available = ort.get_available_providers()
        provider = choose_provider(device, available)
        graph_path = graph_for(info, provider, graph)
        if provider == CUDA:
            session = open_cuda_session(graph_path, threads=threads, quiet=device != "cuda")
        else:
            session = open_session(graph_path, provider, threads=1)
        # onnxruntime falls back to CPU silently (no driver, no cuDNN); under auto a probe said so first (None)
        running = CPU if session is None else session.get_providers()[0]
        if provider == CUDA and running != CUDA:
            # --device cuda asks for the GPU (as choose_provider refuses without one); auto means
            # "CUDA when it is there" (README), and it is not: the CPU graph, staged, on the CPU
            if device == "cuda":
                raise ModelError(
                    f"{graph_path}: device 'cuda' asked for, but onnxruntime could not start its CUDA provider "
                    f"(the session runs on {running}); check the CUDA/cuDNN libraries of nerindex[gpu]"
                )
            log.warning("onnxruntime lists CUDA but could not start it: running the CPU graph on the CPU "
                        "(--device cuda shows onnxruntime's reasons; --device cpu or NERINDEX_DEVICE=cpu skips the try)")
            provider = CPU
            graph_path = graph_for(info, provider, graph)
            session = open_session(graph_path, provider, threads=1)
        check_io(session, graph_path, candidate=info.candidate_threshold is not None, card=info.file(CARD_FILE),
                 dims=info.dims)
        tokenizer = load_tokenizer(info.file(info.tokenizer))

        def stages() -> StagedGraph | None:
            return load_stages(graph_path, lambda data: open_session(data, provider, threads=1, name=graph_path),
                               cache_folder("stages"), expected=info.recorded_sha256(graph_path))  # fmt: skip

        # on CUDA the whole graph's span gathers are cheap: the staged runner is for the CPU
        encoder = cls(info, session, tokenizer, provider=provider, stages=stages if provider == CPU else None,
                      workers=threads or usable_cores(), window_calls=not batches_windows(info, provider, graph_path))  # fmt: skip
        # labels compare spans with bare phrases, as catalog.npy holds them: the unseen template is
        # for queries only, so it changes no stored label and no store's stamp
        encoder.catalog = load_catalog(info, encoder.embed_phrases, catalog)
        if catalog is not None and encoder.catalog is not None:  # labels from another catalog: the stamp says so
            encoder.info = dataclasses.replace(info, catalog_source=encoder.catalog.source(info.type_template))
        return encoder

    # ------------------------------------------------------------------ type phrases

    def query_catalog(self) -> Catalog | None:
        """The catalog's phrases with the vectors a search for each phrase uses, for clients that
        look type vectors up by phrase (Elasticsearch's ``<alias>-types``). ``catalog.npy`` of
        model 0.2.0 was embedded 64 phrases at a time, so its vectors differ from a query's
        (cosine 0.968–1.0); they stay what span labels are computed with."""
        return Catalog.build(self.catalog.phrases, self.embed_types) if self.catalog is not None else None

    def embed_types(self, phrases: Sequence[str]) -> np.ndarray:
        """Unit type vectors ``[n, dims]`` for type phrases (cached: queries repeat).

        Each phrase is embedded alone (:func:`embed_texts`), so its vector is the same whichever
        phrases came with it or before it: a search from the CLI, the service after other
        queries, ``nerindex embed`` with a list, the Elasticsearch type index and ``nerindex eval``
        all query with one vector per phrase. The result is built from vectors local to the call,
        so a call with more phrases than the cache holds still answers every one of them.
        """
        if not phrases:
            return np.zeros((0, self.info.dims), dtype=np.float32)
        # one get each, not "in" then "[]": the service's threads share the cache, and another's
        # insert could evict the phrase between the two (a KeyError, a 500; a web audit, latent)
        found = {p: v for p in dict.fromkeys(phrases) if (v := self._type_cache.get(p)) is not None}
        missing = [p for p in dict.fromkeys(phrases) if p not in found]
        if missing:
            # a trained type's plural or other spelling is embedded as the type ("politicians", "sports-team")
            texts = [type_text(self.info.template_for(p), self.info.trained_type(p) or p) for p in missing]
            check_fits(self.tokenizer, missing, texts, self.info.max_length, SearchError)
            vectors = embed_texts(self.session, self.tokenizer, texts)
            for phrase, vec in zip(missing, vectors):
                found[phrase] = vec.copy()
                self._type_cache[phrase] = found[phrase]
                while len(self._type_cache) > TYPE_CACHE_SIZE:
                    self._type_cache.popitem(last=False)
        return np.stack([found[p] for p in phrases])

    def embed_phrases(self, phrases: Sequence[str]) -> np.ndarray:
        """Unit vectors of type phrases all in ``type_template`` (uncached), for comparing phrases
        with spans and with each other rather than searching (span labels from a ``--catalog``
        file, as ``catalog.npy``'s; Familiarity): :meth:`embed_types` puts a phrase the model was
        not trained on in another template."""
        texts = [type_text(self.info.type_template, p) for p in phrases]
        check_fits(self.tokenizer, phrases, texts, self.info.max_length, InputError)
        return embed_texts(self.session, self.tokenizer, texts)

    # ------------------------------------------------------------------ passages

    def _plan(self, index: int, passage: Passage, enc: object | None = None) -> tuple[list[Word], list[_Item]]:
        """Words and windows of a passage (``enc``: its encoding, when already made)."""
        if enc is None:
            enc = self.tokenizer.encode(passage.text, add_special_tokens=False)
        words = words_from_encoding(enc.word_ids, enc.offsets, passage.text)
        max_tokens = self.info.max_length - len(self._prefix) - len(self._suffix)
        items = [
            _Item(index, w.ids, w.spans, w.chars)
            for w in window_inputs(
                words,
                enc.ids,
                max_tokens=max_tokens,
                max_span_width=self.info.max_span_width,
                prefix=self._prefix,
                suffix=self._suffix,
            )
        ]
        if not items:  # no words at all (e.g. only control characters): still a passage vector
            none = np.zeros((0, 2), dtype=np.int64)
            items.append(_Item(index, self._prefix + self._suffix, none, none))
        return words, items

    def _batches(self, items: list[_Item], batch_size: int) -> list[list[_Item]]:
        """Group windows of similar length; cap both the row count and the candidate count. With
        ``window_calls`` (the CPU) every window is a batch of its own, whatever ``batch_size``."""
        if self.window_calls:
            return [[item] for item in items]
        order = sorted(items, key=lambda it: len(it.ids))
        batches: list[list[_Item]] = []
        current: list[_Item] = []
        for item in order:
            widest = max([len(it.spans) for it in current] + [len(item.spans), 1])
            if current and (
                len(current) >= batch_size or widest * (len(current) + 1) > MAX_SPANS_PER_BATCH
            ):
                batches.append(current)
                current = []
            current.append(item)
        if current:
            batches.append(current)
        return batches

    @property
    def stages(self) -> StagedGraph | None:
        """The staged runner, built on first use, once: every window worker built it at once before
        (an audit: 8 workers held 8 copies, 836 MB against 206); ``None`` runs the whole graph."""
        with self._stages_lock:
            if self._load_stages is not None:
                self._stages, self._load_stages = self._load_stages(), None
        return self._stages

    def token_batches(self, passages: Sequence[Passage], *, batch_size: int = 32) -> list[tuple[np.ndarray, np.ndarray]]:
        """The ``(input_ids, attention_mask)`` arrays :meth:`encode` runs for these passages, batch
        by batch (``bench/bench_indexing.py`` times the transformer alone on the very same batches)."""
        items = [item for i, p in enumerate(passages) for item in self._plan(i, p)[1]]
        return [_token_arrays(batch) for batch in self._batches(items, batch_size)]

    def _detect_or_say(self, batch: list[_Item], with_base: bool) -> tuple[np.ndarray, list[_Hit]]:
        """:meth:`_detect`, with onnxruntime's failure as a one-line ModelError naming the model and the
        window width: a model.json whose max_length is beyond the graph's positions failed with a
        traceback from deep in the graph (an audit)."""
        try:
            return self._detect(batch, with_base)
        except Exception as exc:
            if not type(exc).__module__.startswith("onnxruntime"):
                raise
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            width = max(len(it.ids) for it in batch)  # and what sets it, as a fact, not a diagnosis (a review)
            raise ModelError(f"{self.info.path}: the graph failed on windows of {width} tokens (model.json's "
                             f"max_length, {self.info.max_length}, bounds them): {first}") from exc

    def _detect(self, batch: list[_Item], with_base: bool) -> tuple[np.ndarray, list[_Hit]]:
        """Passage vectors ``[B, D]`` of a batch's windows and its spans that pass detection."""
        ids, mask = _token_arrays(batch)
        counts = np.asarray([len(it.spans) for it in batch], dtype=np.int64)
        rows = np.repeat(np.arange(len(batch), dtype=np.int64), counts)
        local = np.arange(len(rows), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
        pairs = np.concatenate([it.spans for it in batch])
        threshold, wide = self.info.detection_threshold, self.info.candidate_threshold
        stages = self.stages
        if stages is not None:
            got = stages.run(ids, mask, SpanBatch(rows, pairs[:, 0], pairs[:, 1]), threshold, with_base=with_base,
                             candidate_threshold=wide)  # fmt: skip
            bases, wides = got.base_vectors, got.candidate_scores
            hits = [
                (int(rows[k]), int(local[k]), float(got.scores[k]), None if wides is None else float(wides[k]),
                 got.vectors[i], None if bases is None else bases[i])
                for i, k in enumerate(got.kept)
            ]  # fmt: skip
            return got.passage_vectors, hits
        # the whole graph: spans padded to [B, S] with (0, 0)
        starts = np.zeros((len(batch), max(int(counts.max(initial=0)), 1)), dtype=np.int64)
        ends = np.zeros_like(starts)
        starts[rows, local], ends[rows, local] = pairs[:, 0], pairs[:, 1]
        names = ["span_scores", "span_vectors", "passage_vectors"] + (["span_base_vectors"] if with_base else [])
        names += [CANDIDATE_OUTPUT] if wide is not None else []
        feeds = {"input_ids": ids, "attention_mask": mask, "span_starts": starts, "span_ends": ends}
        result = dict(zip(names, self.session.run(names, feeds)))
        scores, vectors, wides = result["span_scores"], result["span_vectors"], result.get(CANDIDATE_OUTPUT)
        keep = scores >= threshold if wides is None else (scores >= threshold) | (wides >= wide)
        kept = np.nonzero(keep & (np.arange(starts.shape[1]) < counts[:, None]))
        bases = result.get("span_base_vectors")
        hits = [
            (int(r), int(k), float(scores[r, k]), None if wides is None else float(wides[r, k]), vectors[r, k].copy(),
             None if bases is None else bases[r, k].copy())
            for r, k in zip(*kept)
        ]  # fmt: skip
        return result["passage_vectors"], hits

    def encode(
        self,
        passages: Sequence[Passage],
        *,
        batch_size: int = 32,
        with_base: bool = False,
        progress: Callable[[int], None] | None = None,
        windows: Callable[[int, int], None] | None = None,
    ) -> list[EncodedPassage]:
        """Detect spans, embed them and the passages; label spans from the catalog.

        ``progress`` is called with the number of passages finished after each batch; ``windows``
        with (windows done, windows in this call), which moves even while one long passage (a
        1 MB passage is thousands of windows, minutes on a CPU) holds ``progress`` at zero.
        """
        # encode_batch: the tokenizer's own threads, ~half the time of one call a passage
        encodings = self.tokenizer.encode_batch([p.text for p in passages], add_special_tokens=False)
        plans = [self._plan(i, p, enc) for i, (p, enc) in enumerate(zip(passages, encodings))]
        found, pvecs = self._run_windows(plans, batch_size, with_base, progress, windows)
        info = self.info
        kept = [decode_spans(spans, info.detection_threshold, info.candidate_threshold, nested=info.nested_spans)
                for spans in found]  # fmt: skip
        labels = self._labels([span for spans in kept for span, _ in spans])
        out: list[EncodedPassage] = []
        offset = 0
        for passage, spans, window_vectors in zip(passages, kept, pvecs):
            out.append(self._assemble(passage, spans, labels[offset : offset + len(spans)], window_vectors))
            offset += len(spans)
        return out

    def _run_windows(
        self,
        plans: list[tuple[list[Word], list[_Item]]],
        batch_size: int,
        with_base: bool,
        progress: Callable[[int], None] | None,
        windows: Callable[[int, int], None] | None,
    ) -> tuple[list[list[_Candidate]], list[list[tuple[np.ndarray, int]]]]:
        """Run every window of every passage: per passage, its candidates that pass the detection
        threshold and its window vectors with their token counts."""
        items = [item for _, its in plans for item in its]
        found: list[list[_Candidate]] = [[] for _ in plans]
        pvecs: list[list[tuple[np.ndarray, int]]] = [[] for _ in plans]
        remaining = [len(its) for _, its in plans]
        done = 0
        batches = self._batches(items, batch_size)
        results = ordered_map(lambda b: self._detect_or_say(b, with_base), batches, self.workers)
        for batch, (passage_vectors, hits) in zip(batches, results):
            for row, k, score, wide, vector, base in hits:
                item = batch[row]
                start, end = item.chars[k].tolist()
                found[item.passage].append((start, end, score, wide, vector, base))
            finished = 0
            for row, item in enumerate(batch):
                pvecs[item.passage].append((passage_vectors[row], len(item.ids)))
                remaining[item.passage] -= 1
                finished += remaining[item.passage] == 0
            if progress is not None and finished:
                progress(finished)
            done += len(batch)
            if windows is not None:
                windows(done, len(items))
        return found, pvecs

    def _labels(self, spans: list[_Candidate]) -> list[tuple[str, ...]]:
        """Catalog labels for all kept spans of a call in one matrix product (per-passage calls
        cost more in thread start-up than in arithmetic)."""
        if self.catalog is None or not spans:
            return [() for _ in spans]
        return self.catalog.label(
            np.stack([span[4] for span in spans]),
            k=self.info.labels_per_span,
            threshold=self.info.label_thresholds(self.catalog.phrases),
        )

    @staticmethod
    def _assemble(
        passage: Passage,
        kept: list[tuple[_Candidate, bool]],
        labels: list[tuple[str, ...]],
        pvecs: list[tuple[np.ndarray, int]],
    ) -> EncodedPassage:
        spans = tuple(
            EncodedSpan(
                start=s,
                end=e,
                text=passage.text[s:e],
                score=sc if mention or wide is None else wide,
                vector=vec.astype(np.float32),
                labels=lab,
                base_vector=base,
                mention=mention,
            )
            for ((s, e, sc, wide, vec, base), mention), lab in zip(kept, labels)
        )
        weights = np.asarray([n for _, n in pvecs], dtype=np.float32)
        pooled = (np.stack([v for v, _ in pvecs]) * weights[:, None]).sum(axis=0)
        pooled /= max(float(np.linalg.norm(pooled)), 1e-12)
        return EncodedPassage(passage=passage, spans=spans, vector=pooled.astype(np.float32))


def _token_arrays(batch: list[_Item]) -> tuple[np.ndarray, np.ndarray]:
    """``input_ids`` and ``attention_mask`` of a batch of windows, padded to the longest."""
    ids = np.zeros((len(batch), max(len(it.ids) for it in batch)), dtype=np.int64)
    mask = np.zeros_like(ids)
    for row, item in enumerate(batch):
        ids[row, : len(item.ids)] = item.ids
        mask[row, : len(item.ids)] = 1
    return ids, mask
