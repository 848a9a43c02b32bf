"""The refresh interval of an index during a bulk load: relaxed at a run's first write, restored
(and the index refreshed) when the run flushes, so a load does not pay for a refresh every second.
"""

from __future__ import annotations

from typing import Any

from . import responses as rs
from .index_requests import refresh_settings
from .templates import INDEX_TEMPLATE, load_template, refresh_interval


class RelaxedRefresh:
    """Relaxes the refresh interval of ``store``'s alias once per load and puts it back."""

    def __init__(self, store: Any) -> None:
        self.store = store  # an ElasticsearchStore: its client, alias, options and error context
        self.previous: tuple[str | None] | None = None  # (interval before the load,) while relaxed

    @property
    def active(self) -> bool:
        return self.previous is not None

    def relax(self) -> None:
        interval = self.store.options.bulk_refresh_interval
        if self.previous is not None or not interval:
            return
        client, alias = self.store.client, self.store.alias
        with self.store.errors("relax the refresh interval for bulk loading"):
            previous = self._now()
            if previous == interval:
                # Left so by a load that was killed while relaxed (the value is nerindex's own:
                # options.BULK_REFRESH_INTERVAL): restore it at the end all the same, to the shipped
                # template's explicit interval. Not to null (the server default): with no explicit
                # interval a shard that no search reaches for 30 s goes search-idle and stops
                # refreshing, so version() stood still while another process wrote and the service
                # served its cached result sets (an audit).
                previous = _template_interval()
            else:
                client.indices.put_settings(index=alias, settings=refresh_settings(interval))
        self.previous = (previous,)

    def heal(self) -> bool:
        """Put back an interval a killed load left relaxed (nerindex's own value) where this handle
        did not relax it, and say so: a rerun that found every passage stored wrote nothing, so it
        neither restored it nor refreshed, and its passages stayed unsearchable for up to 30 s and the
        interval relaxed for good (an audit)."""
        interval = self.store.options.bulk_refresh_interval
        if self.previous is not None or not interval or self.store.target() is None:
            return False
        with self.store.errors("read the refresh interval"):
            current = self._now()
        if current != interval:
            return False
        with self.store.errors("restore the refresh interval"):
            self.store.client.indices.put_settings(index=self.store.alias, settings=refresh_settings(_template_interval()))
        return True

    def _now(self) -> str | None:
        """The alias's refresh interval as its index settings give it (None: the server default)."""
        body = self.store.client.indices.get_settings(index=self.store.alias, name="index.refresh_interval").body
        return rs.refresh_interval(body)

    def restore(self) -> None:
        if self.previous is None:
            return
        (previous,) = self.previous
        with self.store.errors("restore the refresh interval"):
            self.store.client.indices.put_settings(index=self.store.alias, settings=refresh_settings(previous))
        self.previous = None


def _template_interval() -> str | None:
    """The shipped index template's explicit refresh interval: what a killed load's relaxed one goes back to."""
    return refresh_interval(load_template(INDEX_TEMPLATE))
