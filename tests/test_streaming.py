"""Streaming ingestion: the pipeline reads its input one chunk at a time; the CLI reads a file twice
(check all of it, then index it lazily) instead of holding it in memory."""

from __future__ import annotations

from indexer.pipeline import index_passages
from indexer.stores.embedded import EmbeddedStore


def test_input_is_consumed_one_chunk_at_a_time(tmp_path):
    """A generator is read one chunk ahead of what is written, never whole (bounded memory)."""
    from test_embedded_faults import SyntheticEncoder, synthetic_passages

    items = synthetic_passages(100)
    pulled = 0
    ahead: list[int] = []

    def source():
        nonlocal pulled
        for p in items:
            pulled += 1
            yield p

    with EmbeddedStore.open(tmp_path / "s") as store:
        real_write = store.write

        def write(docs, **kw):
            ahead.append(pulled - store.counts().passages)
            return real_write(docs, **kw)

        store.write = write
        report = index_passages(source(), SyntheticEncoder(), store, chunk_size=16)
        assert store.counts().passages == 100
    assert (report.passages, report.created) == (100, 100)
    assert max(ahead) <= 16 and len(ahead) == 7


def test_cli_reads_a_file_twice_and_holds_none_of_it(tmp_path, capsys, monkeypatch):
    """`nerindex index FILE` checks the whole file first, then indexes it from a second lazy read:
    the input is never held as a list."""
    import types

    import indexer.api
    import indexer.reading as reading
    from test_cli import run

    source = tmp_path / "in.jsonl"
    source.write_text("".join(f'{{"id": "{i}", "text": "Passage {i} about Montana."}}\n' for i in range(5)))
    reads: list[int] = []
    given: list[object] = []
    real_read, real_index = reading.read_passages, indexer.api.NerIndex.index

    def counting_read(*args, **kwargs):
        reads.append(1)
        return real_read(*args, **kwargs)

    def recording_index(self, passages, **kwargs):
        given.append(passages)
        return real_index(self, passages, **kwargs)

    monkeypatch.setattr(reading, "read_passages", counting_read)
    monkeypatch.setattr(indexer.api.NerIndex, "index", recording_index)
    code, out, _ = run(capsys, "index", str(source), "--store", str(tmp_path / "s"), "--json")
    assert code == 0 and '"created": 5' in out
    assert len(reads) == 2 and isinstance(given[0], types.GeneratorType)
