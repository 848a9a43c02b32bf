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
