"""The service never answers from a result set of an older store: indexing while it serves.

A second NerIndex handle (as a second process would) writes to the folder the service reads; the
service must see the new passages at once in ``all``, ``facets``, cursors and Search UI, without
a restart (nerindex 0.2.0 kept answering total=3 until it was restarted).
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the [web] extra is not installed")
pytest.importorskip("httpx", reason="the [web] extra is not installed")

from fastapi.testclient import TestClient  # noqa: E402

from indexer.api import NerIndex  # noqa: E402
from indexer.encoder import OnnxEncoder  # noqa: E402
from indexer.assets import default_model_dir  # noqa: E402
from indexer.records import Passage  # noqa: E402
from indexer.stores.embedded import EmbeddedStore  # noqa: E402
from indexer.web import create_app  # noqa: E402

LOW = -1.0  # every detected span matches: totals do not depend on how good the model is

FIRST = [
    Passage("dino-1", "Tyrannosaurus rex lived in western North America.", {"topic": "science"}),
    Passage("dino-2", "Fossils of Triceratops are shown in London.", {"topic": "science"}),
    Passage("pol-1", "Angela Merkel led the Christian Democratic Union.", {"topic": "politics"}),
]
LATER = [
    Passage("music-1", "The Beatles recorded Abbey Road in London.", {"topic": "music"}),
    Passage("music-2", "Miles Davis released Kind of Blue with Columbia Records.", {"topic": "music"}),
    Passage("dino-3", "The long-necked Brachiosaurus reached high leaves.", {"topic": "science"}),
]


@pytest.fixture(scope="module")
def encoder():
    return OnnxEncoder.from_dir(default_model_dir(), device="cpu")


def search(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post("/api/v1/search", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def topics(data: dict[str, Any]) -> dict[str, int]:
    return {row["value"]: row["count"] for row in data["facets"]["topic"]}


def test_indexing_while_serving_is_seen_by_all_facets_cursors_and_searchui(tmp_path, encoder):
    folder = tmp_path / "store"
    served = NerIndex(encoder, EmbeddedStore.open(folder), description="served")
    served.index(FIRST)
    writer = NerIndex(encoder, EmbeddedStore.open(folder), description="writer")
    query = {"type": "dinosaur", "threshold": LOW, "limit": 2, "all": True, "facets": True}
    ui_body = {"state": {"searchTerm": "dinosaur", "resultsPerPage": 50}, "queryConfig": {}}
    with TestClient(create_app(served, threshold=LOW), base_url="http://127.0.0.1:8000") as client:
        before = search(client, **query)
        assert before["total"] == 3 and topics(before) == {"science": 2, "politics": 1}
        assert client.post("/api/search", json=ui_body).json()["totalResults"] == 3
        cursor = before["next_cursor"]
        assert cursor is not None

        writer.index(LATER)  # another handle on the same folder, as `nerindex index` would

        after = search(client, **query)
        assert after["total"] == 6 and topics(after) == {"science": 3, "politics": 1, "music": 2}
        assert client.post("/api/search", json=ui_body).json()["totalResults"] == 6
        stale = client.post("/api/v1/search", json={**query, "cursor": cursor})
        assert stale.status_code == 409, stale.text
        error = stale.json()["error"]
        assert error["code"] == "stale_cursor" and "without a cursor" in error["message"]
        # paging the new result set from its start returns every match exactly once
        seen, cursor = [], None
        while True:
            page = search(client, **query, **({"cursor": cursor} if cursor else {}))
            seen += [h["id"] for h in page["hits"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert sorted(seen) == sorted(p.id for p in FIRST + LATER)
    writer.close()
    served.close()


class WriteDuringSearch(NerIndex):
    """A served index whose next exhaustive search (the service's result set) or next top-k search
    first lets another handle write: a write landing between the service's reads, on cue."""

    def __init__(self, *args: Any, writer: NerIndex, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.writer = writer
        # (on an exhaustive search?, how many such searches to let pass first, what to write)
        self.cue: tuple[bool, int, list[Passage]] | None = None
        self.stream: list[Passage] = []  # one written before each exhaustive search, while any are left

    def search(self, type_phrase: str, **options: Any):
        if self.stream and options.get("exhaustive"):  # an index being loaded: a write before every read
            self.writer.index([self.stream.pop(0)])
        if self.cue is not None and self.cue[0] == bool(options.get("exhaustive")):
            exhaustive, skip, passages = self.cue
            self.cue = (exhaustive, skip - 1, passages) if skip else None
            if not skip:
                self.writer.index(passages)
        return super().search(type_phrase, **options)


def test_a_write_between_the_services_reads_never_mixes_two_states(tmp_path, encoder):
    """An audit forced a write between the version a request reads and the searches it then makes:
    page 2 came from the newer state with a 200 (one passage never shown), top hits came with a
    total and facets of another state, and a Search UI answer's hits and disjunctive facet counts
    disagreed. Every such request is now answered from one version, again when a write landed."""
    folder = tmp_path / "store"
    writer = NerIndex(encoder, EmbeddedStore.open(folder), description="writer")
    served = WriteDuringSearch(encoder, EmbeddedStore.open(folder), description="served", writer=writer)
    served.index(FIRST)
    query = {"type": "dinosaur", "threshold": LOW, "limit": 2, "all": True}
    with TestClient(create_app(served, threshold=LOW), base_url="http://127.0.0.1:8000") as client:
        service = client.app.state.service
        cursor = search(client, **query)["next_cursor"]
        service.cache.clear()  # page 2's result set is computed again (evicted, or another version read first)
        served.cue = (True, 0, LATER[:1])
        stale = client.post("/api/v1/search", json={**query, "cursor": cursor})
        assert stale.status_code == 409, stale.text  # was 200 with the newer state's second page

        served.cue = (True, 0, LATER[1:2])  # after the top-k search, before the result set of its facets
        data = search(client, type="dinosaur", threshold=LOW, limit=50, facets=True)
        assert data["total"] == len(data["hits"]) == sum(topics(data).values()) == 5  # hits were 4

        ui_body = {"state": {"searchTerm": "dinosaur", "resultsPerPage": 50,
                             "filters": [{"field": "topic", "type": "any", "values": ["science"]}]},
                   "queryConfig": {"facets": {"topic": {"type": "value"}}, "disjunctiveFacets": ["topic"]}}
        service.cache.clear()  # (the facets' result set above is this one's second, cached)
        served.cue = (True, 1, LATER[2:])  # a science passage, between the two result sets
        ui = client.post("/api/search", json=ui_body).json()
        science = {row["value"]: row["count"] for row in ui["facets"]["topic"][0]["data"]}["science"]
        assert ui["totalResults"] == science == 3  # were 2 and 3
    writer.close()
    served.close()


def test_a_store_written_all_the_time_still_answers_and_refuses_its_cursors(tmp_path, encoder):
    """A review: while an index was loaded (a write between any two reads) every facet, all and
    Search UI request was a 503 after three tries. It is now answered from the latest reads, and a
    cursor then is stale rather than paged from another state."""
    folder = tmp_path / "store"
    writer = NerIndex(encoder, EmbeddedStore.open(folder), description="writer")
    served = WriteDuringSearch(encoder, EmbeddedStore.open(folder), description="served", writer=writer)
    served.index(FIRST)
    stream = [Passage(f"more-{i}", f"Stegosaurus number {i} was found in Colorado.", {"topic": "science"}) for i in range(12)]
    with TestClient(create_app(served, threshold=LOW), base_url="http://127.0.0.1:8000") as client:
        served.stream = list(stream)
        first = search(client, type="dinosaur", threshold=LOW, limit=2, all=True, facets=True)
        assert first["total"] >= 3 and sum(topics(first).values()) == first["total"] and first["next_cursor"]
        ui = client.post("/api/search", json={"state": {"searchTerm": "dinosaur", "resultsPerPage": 50}})
        assert ui.status_code == 200, ui.text
        page2 = client.post("/api/v1/search", json={"type": "dinosaur", "threshold": LOW, "limit": 2, "all": True,
                                                    "facets": True, "cursor": first["next_cursor"]})
        assert page2.status_code == 409, page2.text
        written = len(stream) - len(served.stream)
        served.stream = []
        assert written >= 4  # at least two tries and the answer for each request, each after a write
        seen, cursor = [], None  # quiet again: pages as before, every passage once
        while True:
            page = search(client, type="dinosaur", threshold=LOW, limit=2, all=True, **({"cursor": cursor} if cursor else {}))
            seen += [h["id"] for h in page["hits"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert sorted(seen) == sorted([p.id for p in FIRST] + [p.id for p in stream[:written]])
    writer.close()
    served.close()


def test_a_cursor_is_refused_by_a_server_that_searches_the_phrase_with_another_vector(tmp_path, encoder):
    """The stale-answer audit (round 30): a cursor was bound to the phrase, threshold, filters and
    store version, not to the vector the phrase is searched with, so a server whose model folder
    was edited (here the unseen template) or that runs another graph took it and repeated and
    skipped passages. Two servers on one store, the second with a model copy of another template."""
    import json

    folder = tmp_path / "store"
    served = NerIndex(encoder, EmbeddedStore.open(folder), description="served")
    served.index(FIRST + LATER)
    other_model = tmp_path / "model"
    other_model.mkdir()
    for path in default_model_dir().iterdir():
        if path.name != "model.json":
            (other_model / path.name).symlink_to(path)
    card = json.loads((default_model_dir() / "model.json").read_text(encoding="utf-8"))
    (other_model / "model.json").write_text(json.dumps({**card, "unseen_type_template": "{}"}), encoding="utf-8")
    other = NerIndex(OnnxEncoder.from_dir(other_model, device="cpu"), EmbeddedStore.open(folder), description="other")
    query = {"type": "natural landmark", "threshold": LOW, "limit": 2, "all": True}
    with TestClient(create_app(served, threshold=LOW), base_url="http://127.0.0.1:8000") as first, \
            TestClient(create_app(other, threshold=LOW), base_url="http://127.0.0.1:8000") as second:  # fmt: skip
        cursor = search(first, **query)["next_cursor"]
        assert cursor is not None
        assert search(first, **query, cursor=cursor)["hits"]  # the server that gave it pages on
        moved = second.post("/api/v1/search", json={**query, "cursor": cursor})
        assert moved.status_code == 409 and moved.json()["error"]["code"] == "stale_cursor", moved.text
        assert "another vector" in moved.json()["error"]["message"]
