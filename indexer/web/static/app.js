// nerindex search page. No build step, no dependencies.
//
// Safety rule: corpus text (passages, mentions, metadata) only ever reaches the page through
// textContent / createTextNode, never innerHTML, so a passage holding <script> or onerror= is
// shown as the text it is. The server also sends a Content-Security-Policy without inline script.
"use strict";

const DEFAULT_PAGE_SIZE = 20;
const LOAD_ALL_PAGE = 500;
const API = "/api/v1";

const state = {
  pageSize: DEFAULT_PAGE_SIZE, // ?size=N in the URL changes it (at most the server's page size limit)
  sizeAsked: null, // the URL's ?size=N, written back as given (not the server's limit that capped it)
  query: null, // {type, text, threshold (null: the model's for the type), passage_weight (null: the model's), filters}
  shown: null, // the query whose answer is shown (its facets, its filters): the last that answered
  thresholdSet: false, // the slider was moved or the URL gave a threshold: send it; else the server chooses
  threshold: null, // the threshold to send once set: the URL's exactly (the slider snaps to 0..1 by 0.01)
  applied: null, // the threshold the last search applied (the response's)
  appliedWeight: null, // the λ the last search applied (the response's: the model's for the type unless set)
  loadAllPage: LOAD_ALL_PAGE, // at most the server's page size limit
  hits: [],
  total: 0,
  nextCursor: null,
  facets: {},
  busy: false,
  info: null,
  // each search counts one up; an answer (a first page, or a later one) for an older search is
  // dropped, so a slow answer cannot overwrite or extend a newer search's results (a web audit:
  // a facet ticked while one was under way showed the old query's hits, or added them to the new)
  generation: 0,
};

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------- pure helpers

/** Split text into plain and highlighted segments. Offsets are code points (Python str
 *  indices), so the text is cut as an array of code points, not UTF-16 units. */
function segments(text, spans) {
  const chars = Array.from(text);
  // Spans may nest (nested decoding): of overlapping spans the most similar is marked.
  const taken = [];
  for (const span of [...spans].sort((a, b) => (b.similarity ?? 0) - (a.similarity ?? 0))) {
    if (span.end > chars.length || span.start >= span.end) continue;
    if (taken.every((t) => span.end <= t.start || t.end <= span.start)) taken.push(span);
  }
  const sorted = taken.sort((a, b) => a.start - b.start);
  const out = [];
  let pos = 0;
  for (const span of sorted) {
    if (span.start > pos) out.push({ text: chars.slice(pos, span.start).join("") });
    out.push({ text: chars.slice(span.start, span.end).join(""), span });
    pos = span.end;
  }
  if (pos < chars.length) out.push({ text: chars.slice(pos).join("") });
  return out;
}

/** The spans a hit's passage draws: its marks, and the candidate that ranked it (ranked_by,
 *  flagged) where it overlaps no mark. Marks win: ranked_by outscores every mark by definition, so
 *  in segments() it would hide one it overlaps (a review: "Python programming language" under the
 *  candidate "language"); the note under the passage names it either way. */
function drawnSpans(hit) {
  const by = hit.ranked_by;
  if (!by || hit.spans.some((s) => s.start < by.end && by.start < s.end)) return hit.spans;
  return [...hit.spans, { ...by, candidate: true }];
}

/** One CSV cell (RFC 4180 quoting). Text cells that a spreadsheet would run as a formula
 *  (=, +, -, @, tab, CR first) get a leading apostrophe. */
function csvCell(value, { isText = true } = {}) {
  if (value === null || value === undefined) return "";
  let s = typeof value === "string" ? value : typeof value === "object" ? exactJSON(value) : String(value);
  if (isText && /^[=+\-@\t\r]/.test(s)) s = "'" + s;
  return /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
}

// a metadata field named like one of the hit's own columns is headed "fields.<name>", so that
// no two columns share a header (an audit: a field "score" made two "score" columns)
const HIT_COLUMNS = ["id", "score", "mentions", "text"];

function toCSV(hits) {
  const fieldNames = [...new Set(hits.flatMap((h) => Object.keys(h.fields || {})))].sort();
  // one to one: a field named like a column, or beginning with "fields.", is headed "fields.<name>" (an audit)
  const header = [...HIT_COLUMNS, ...fieldNames.map((f) => (HIT_COLUMNS.includes(f) || f.startsWith("fields.") ? `fields.${f}` : f))];
  const rows = [header.map((h) => csvCell(h)).join(",")];
  for (const h of hits) {
    const mentions = h.spans.map((s) => `${s.text} (${s.similarity.toFixed(3)})`).join("; ");
    const cells = [
      csvCell(h.id),
      csvCell(h.score, { isText: false }),
      csvCell(mentions),
      csvCell(h.text),
      ...fieldNames.map((f) => {
        const value = h.fields ? ownValue(h.fields, f) : undefined;
        return csvCell(value, { isText: typeof value === "string" }); // -5 is a number, not a formula
      }),
    ];
    rows.push(cells.join(","));
  }
  return rows.join("\r\n") + "\r\n";
}

/** JSON Lines, with U+2028, U+2029 and U+0085 escaped: readers that split lines as Python's
 *  str.splitlines does broke a record at them (an audit; `nerindex search --json` escapes them too). */
function toJSONL(hits) {
  const escaped = (line) => line.replace(/[\u2028\u2029\u0085]/g, (c) => "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0"));
  return hits.map((h) => escaped(exactJSON(h))).join("\n") + (hits.length ? "\n" : "");
}

/** JSON text parsed with integers beyond a JavaScript number's exact range kept as BigInt: a
 *  tweet id 12345678901234567890 in a passage's metadata would otherwise be shown and exported as
 *  ...567000 (an audit). Needs JSON.parse's source text (Chromium 114+, Firefox 135+); without it
 *  numbers parse as before. */
function parseExact(text) {
  return JSON.parse(text, (key, value, context) =>
    typeof value === "number" && !Number.isSafeInteger(value) && context && /^-?\d+$/.test(context.source)
      ? BigInt(context.source) : value);
}

/** JSON.stringify that writes parseExact's BigInts as the digits they hold. */
function exactJSON(value) {
  return JSON.stringify(value, (key, v) => (typeof v === "bigint" ? JSON.rawJSON(v.toString()) : v));
}

/** An object's own property (undefined if it has none): metadata field names such as
 *  "constructor" or "__proto__" must not read Object.prototype's (an audit: a facet on a field
 *  named "constructor" showed a function and sent a null filter). */
function ownValue(object, name) {
  return Object.hasOwn(object, name) ? object[name] : undefined;
}

/** A copy of ``object`` with ``name`` set as an own property ("__proto__" included). */
function withOwn(object, name, value) {
  const copy = { ...object };
  if (value === undefined) delete copy[name];
  else Object.defineProperty(copy, name, { value, enumerable: true, writable: true, configurable: true });
  return copy;
}

function slug(s) {
  return (s || "results").toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "") || "results";
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

// ---------------------------------------------------------------- API

async function api(path, body) {
  const init = body === undefined ? {} : {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: exactJSON(body),
  };
  let response;
  try {
    response = await fetch(API + path, init);
  } catch (err) {
    throw new Error("the server cannot be reached");
  }
  let data = null;
  try {
    data = parseExact(await response.text());
  } catch (err) {
    /* not JSON */
  }
  if (!response.ok) {
    const message = data && data.error ? data.error.message : response.statusText;
    const error = new Error(message || `HTTP ${response.status}`);
    error.code = data && data.error ? data.error.code : undefined;
    throw error;
  }
  return data;
}

// ---------------------------------------------------------------- rendering

function showError(message) {
  const box = $("error");
  box.textContent = message || "";
  box.hidden = !message;
}

function setBusy(busy) {
  state.busy = busy;
  document.body.classList.toggle("busy", busy);
  // not the Search button: with the form's one submit button disabled, Enter did nothing while a
  // search answered (a page audit); a newer search drops the older one's answer (generation)
  for (const id of ["load-more", "load-all", "export-jsonl", "export-csv"]) $(id).disabled = busy;
  if (!busy) updateToolbar();
}

function updateToolbar() {
  const has = state.hits.length > 0;
  $("toolbar").hidden = !has;
  $("load-more").hidden = !state.nextCursor;
  $("load-all").hidden = !state.nextCursor;
}

function renderSummary() {
  const q = state.query;
  if (!q) {
    $("summary").textContent = "";
    return;
  }
  const n = state.total;
  const shown = state.hits.length;
  const what = `${n} passage${n === 1 ? "" : "s"} mention${n === 1 ? "s" : ""} an entity of type “${q.type}”`;
  const extra = shown < n ? ` — showing ${shown}` : "";
  const weight = q.passage_weight !== null ? `, passage weight ${q.passage_weight}`
    : typeof state.appliedWeight === "number" ? `; passage weight ${state.appliedWeight}, the model's` : "";
  const applied = typeof state.applied === "number" ? formatThreshold(state.applied) : "?";
  const whose = q.threshold !== null ? "" : serverThreshold() !== null ? ", the server's" : ", the model's for this type";
  $("summary").textContent = `${what} (similarity ≥ ${applied}${whose}${weight})${extra}`;
}

function renderHit(hit, rank) {
  const head = el(
    "div",
    { class: "hit-head" },
    el("span", { class: "rank" }, `${rank}.`),
    el("span", { class: "score", title: "best span similarity (mention or candidate) + λ · passage similarity" }, hit.score.toFixed(3)),
    el("span", { class: "hit-id" }, hit.id),
  );
  const meta = Object.entries(hit.fields || {});
  if (meta.length) {
    const dl = el("span", { class: "fields" });
    for (const [k, v] of meta) {
      dl.append(el("span", { class: "field-item" }, el("b", {}, k), ": ", typeof v === "object" ? exactJSON(v) : String(v)));
    }
    head.append(dl);
  }
  const passage = el("p", { class: "passage", dir: "auto" });  // right-to-left text laid out as such (an audit)
  // a hit may rank through a candidate span (a second detector's, never marked as a mention; a
  // top-k hit may have no mention marked at all): that candidate is shown dotted, and named below
  const ranker = hit.ranked_by || null;
  const drawnSet = drawnSpans(hit);
  for (const seg of segments(hit.text, drawnSet)) {
    if (!seg.span) {
      passage.append(document.createTextNode(seg.text));
      continue;
    }
    const labels = seg.span.labels && seg.span.labels.length ? ` · ${seg.span.labels.join(", ")}` : "";
    passage.append(
      el(
        "mark",
        {
          class: seg.span.candidate ? "candidate" : "mention",
          title: `${seg.span.candidate ? "candidate span, not a marked mention · " : ""}similarity ${seg.span.similarity.toFixed(3)}${labels}`,
          dataset: { sim: seg.span.similarity.toFixed(2), start: String(seg.span.start), end: String(seg.span.end) },
        },
        seg.text,
      ),
    );
  }
  const drawn = drawnSet.some((s) => s.candidate);
  // hidden where it overlaps a mark: inside one, or across marks (a page audit: "inside" of a
  // candidate spanning two marks and the words between them)
  const inside = ranker && hit.spans.some((s) => s.start <= ranker.start && ranker.end <= s.end);
  const where = drawn ? " (dotted)" : inside ? ", inside a marked mention" : ", overlapping marked mentions";
  const which = ranker ? `the candidate span “${ranker.text}”${where}` : "a candidate span";
  const unmarked = hit.spans.length
    ? ranker ? [el("p", { class: "unmarked" }, `Ranked by ${which}, which is never marked as a mention.`)] : []
    : [el("p", { class: "unmarked" }, `No mention marked: ranked by ${which}, which is never marked as a mention; not among “Load all” answers.`)];
  return el("li", { class: "hit", dataset: { id: hit.id } }, head, passage, ...unmarked);
}

function renderResults({ append = false, from = 0 } = {}) {
  const list = $("results");
  if (!append) list.replaceChildren();
  const frag = document.createDocumentFragment();
  for (let i = from; i < state.hits.length; i++) frag.append(renderHit(state.hits[i], i + 1));
  list.append(frag);
  renderSummary();
  updateToolbar();
}

function renderFacets() {
  const box = $("facets");
  box.replaceChildren();
  const filters = (state.shown && state.shown.filters) || {};
  const names = [...new Set([...Object.keys(state.facets || {}), ...Object.keys(filters)])].sort();
  if (!names.length) {
    box.hidden = true;
    return;
  }
  box.hidden = false;
  box.append(el("h2", {}, "Filter by"));
  for (const name of names) {
    const selected = asList(ownValue(filters, name));
    const values = [...(ownValue(state.facets || {}, name) || [])];
    // a value the answer did not count is shown without a number, not as 0 (a page audit: a ticked
    // "123" showed 0 beside its two passages; the API leaves out what it did not count)
    for (const v of selected) if (!values.some((x) => sameValue(x.value, v))) values.push({ value: v, count: null });
    const set = el("fieldset", { class: "facet", dataset: { field: name } }, el("legend", {}, name));
    for (const { value, count } of values) {
      const box_ = el("input", { type: "checkbox" });
      box_.checked = selected.some((v) => sameValue(v, value));
      box_.addEventListener("change", () => toggleFilter(name, value, box_.checked));
      set.append(el("label", { class: "facet-value" }, box_, " ", String(value), " ",
        el("span", { class: "count" }, count === null ? "" : String(count))));
    }
    box.append(set);
  }
}

function renderFooter(info) {
  const model = info.model || {};
  const store = info.store || {};
  $("footer-model").textContent = `model: ${model.id || "?"} ${model.version || ""}`.trim();
  const counts = store.passages !== undefined ? ` (${store.passages} passages, ${store.spans} spans)` : "";
  $("footer-store").textContent = `store: ${store.where || "?"}${counts}`;
}

// ---------------------------------------------------------------- actions

function readForm() {
  return {
    type: $("type").value.trim(),
    text: $("text").value.trim() || null,
    threshold: state.thresholdSet ? state.threshold : null,
    passage_weight: $("passage-weight").value === "" ? null : Number($("passage-weight").value),
    filters: state.query ? { ...state.query.filters } : {},
  };
}

function requestBody(q, extra) {
  const body = { type: q.type, text: q.text, filters: q.filters, all: true, ...extra };
  if (q.threshold !== null) body.threshold = q.threshold; // else the model's for this type (or the server's)
  if (q.passage_weight !== null) body.passage_weight = q.passage_weight; // else the model's λ
  return body;
}

function writeURL(q) {
  const params = new URLSearchParams();
  params.set("type", q.type);
  if (q.text) params.set("text", q.text);
  if (q.threshold !== null) params.set("threshold", String(q.threshold));
  if (q.passage_weight !== null) params.set("passage_weight", String(q.passage_weight));
  if (Object.keys(q.filters).length) params.set("filters", exactJSON(q.filters));
  if (state.sizeAsked !== null) params.set("size", String(state.sizeAsked));
  history.replaceState(null, "", "?" + params.toString());
}

async function runSearch(q) {
  if (!q.type) {
    showError("Type an entity type, e.g. “dinosaur”.");
    return;
  }
  state.query = q;
  const mine = ++state.generation;
  showError("");
  setBusy(true);
  try {
    const data = await api("/search", requestBody(q, { limit: state.pageSize, facets: true }));
    if (mine !== state.generation) return; // a newer search is under way, or answered
    state.hits = data.hits;
    state.total = data.total;
    state.nextCursor = data.next_cursor;
    state.facets = data.facets || {};
    state.applied = data.threshold;
    state.appliedWeight = data.passage_weight;
    if (!state.thresholdSet && typeof data.threshold === "number") $("threshold").value = String(data.threshold);
    if (q.passage_weight === null && typeof data.passage_weight === "number") {
      $("passage-weight").placeholder = `model's: ${data.passage_weight}`; // the model's λ for this type
    }
    state.shown = q;
    showThreshold();
    writeURL(q);
    renderResults();
    renderFacets();
  } catch (err) {
    if (mine !== state.generation) return;
    state.hits = [];
    state.total = 0;
    state.nextCursor = null;
    state.facets = {}; // not the last query's, clickable under this one's error (a page audit)
    state.shown = null;
    renderResults();
    renderFacets();
    $("summary").textContent = ""; // the search failed: no claim that nothing matches
    showError(err.message);
  } finally {
    if (mine === state.generation) setBusy(false);
  }
}

/** The next page of the shown search; false when a newer search began meanwhile (nothing added). */
async function loadPage(limit) {
  const mine = state.generation;
  const from = state.hits.length;
  const data = await api("/search", requestBody(state.query, { limit, cursor: state.nextCursor }));
  if (mine !== state.generation) return false;
  state.hits.push(...data.hits);
  state.nextCursor = data.next_cursor;
  state.total = data.total;
  renderResults({ append: true, from });
  return true;
}

/** Pages of the shown search: one, or (all) every one left; a newer search stops it. */
async function loadPages(limit, all) {
  if (!state.nextCursor || state.busy) return;
  const mine = state.generation;
  setBusy(true);
  try {
    while ((await loadPage(limit)) && all && state.nextCursor);
  } catch (err) {
    if (mine !== state.generation) return;
    if (err.code === "stale_cursor") {
      // the API's words ("without a cursor") mean nothing here, and every further click failed the
      // same way (a web audit): the pages shown stay, the buttons go, a new search shows the rest
      state.nextCursor = null;
      updateToolbar();
      showError("The index changed since this search: search again to see the rest of its current results.");
    } else {
      showError(err.message);
    }
  } finally {
    if (mine === state.generation) setBusy(false);
  }
}

const loadMore = () => loadPages(state.pageSize, false);
const loadAll = () => loadPages(state.loadAllPage, true);

function toggleFilter(field, value, on) {
  // the facets are the shown query's: not a type typed but not searched, nor a search of another
  // type still answering (a page audit: a facet ticked then filtered the pending search's type);
  // a pending search of the shown type is a facet ticked a moment ago, which this one adds to
  const pending = state.query;
  const shown = pending && state.shown && pending.type === state.shown.type ? pending : state.shown;
  if (!shown) return;
  const current = asList(ownValue(shown.filters, field));
  const next = on ? [...current.filter((v) => !sameValue(v, value)), value] : current.filter((v) => !sameValue(v, value));
  runSearch({ ...shown, filters: withOwn(shown.filters, field, next.length ? next : undefined) });
}

/** One filter value for the page: 123, "123" and 123n name one value, as the filter matches them;
 *  a boolean only itself (the filter true matches booleans alone, a review). */
function sameValue(a, b) {
  if (a === b) return true;
  const plain = (v) => v !== null && typeof v !== "object" && typeof v !== "boolean";
  return plain(a) && plain(b) && String(a) === String(b);
}

/** A link's number as written in decimal ("0.4", "1e-1"), else null: Number() also took "0x1" as 1. */
function decimal(text) {
  return /^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$/.test(text) ? Number(text) : null;
}

function download(name, type, content) {
  const url = URL.createObjectURL(new Blob([content], { type }));
  const a = el("a", { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

function showThreshold() {
  // until a threshold is chosen, the server's (serve --threshold) or else the model's applies: the
  // model has one for types it was trained on and one for others
  const value = state.thresholdSet ? state.threshold : Number($("threshold").value);
  const whose = state.thresholdSet ? "" : serverThreshold() !== null ? " (server's)" : " (model's)";
  $("threshold-value").textContent = `${formatThreshold(value)}${whose}`;
}

/** A threshold as set: two decimals, or all of them when it has more (a URL may give 0.1234). */
function formatThreshold(t) {
  return Math.abs(t * 100 - Math.round(t * 100)) < 1e-9 ? t.toFixed(2) : String(t);
}

function serverThreshold() {
  const server = (state.info && state.info.server) || {};
  return typeof server.threshold === "number" ? server.threshold : null;
}

/** A filter's values as a list: the API takes one value or a list of them. */
function asList(value) {
  return value === undefined ? [] : Array.isArray(value) ? value : [value];
}

// ---------------------------------------------------------------- start

async function start() {
  $("threshold").addEventListener("input", () => {
    state.thresholdSet = true;
    state.threshold = Number($("threshold").value);
    showThreshold();
  });
  $("search-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = readForm();
    if (!state.query || state.query.type !== q.type) q.filters = {}; // facets belong to a type
    runSearch(q);
  });
  $("load-more").addEventListener("click", loadMore);
  $("load-all").addEventListener("click", loadAll);
  $("export-jsonl").addEventListener("click", () =>
    download(`nerindex-${slug(state.query.type)}.jsonl`, "application/x-ndjson", toJSONL(state.hits)));
  $("export-csv").addEventListener("click", () =>
    download(`nerindex-${slug(state.query.type)}.csv`, "text/csv;charset=utf-8", toCSV(state.hits)));

  const params = new URLSearchParams(location.search);
  const size = Number(params.get("size"));
  if (Number.isInteger(size) && size >= 1 && size <= 1000) state.pageSize = state.sizeAsked = size;
  const [info, types] = await Promise.allSettled([api("/info"), api("/types?limit=1000")]);
  if (info.status === "fulfilled") {
    state.info = info.value;
    renderFooter(info.value);
    const server = info.value.server || {};
    const t = typeof server.threshold === "number" ? server.threshold : info.value.model && info.value.model.similarity_threshold;
    if (typeof t === "number" && decimal(params.get("threshold") || "") === null) $("threshold").value = String(t);
    const w = info.value.model && info.value.model.passage_weight;
    if (typeof w === "number") $("passage-weight").placeholder = `model's: ${w}`;
    const most = server.limits && server.limits.max_page_size;
    if (Number.isInteger(most) && most >= 1) {
      state.pageSize = Math.min(state.pageSize, most);
      state.loadAllPage = Math.min(LOAD_ALL_PAGE, most);
    }
  } else {
    showError(info.reason.message);
  }
  if (types.status === "fulfilled") {
    $("type-list").replaceChildren(...types.value.types.map((t) => el("option", { value: t })));
  }
  // A link's value that cannot be read is named, and the search is not run without it: a truncated
  // filters=… or threshold=0.9x had been dropped, and another search shown as the link's (an audit).
  const unreadable = [];
  if (params.has("threshold") && params.get("threshold").trim() !== "") {
    if (decimal(params.get("threshold")) !== null) {
      state.threshold = decimal(params.get("threshold")); // sent as given; the slider only shows it
      $("threshold").value = String(state.threshold);
      state.thresholdSet = true;
    } else {
      unreadable.push(`threshold “${params.get("threshold")}” is not a number`);
    }
  }
  showThreshold();
  // a search the user began while the page started is theirs: the link's would replace it (a page audit)
  if (params.get("type") && state.generation === 0) {
    $("type").value = params.get("type");
    $("text").value = params.get("text") || "";
    const weight = params.get("passage_weight") || "";
    $("passage-weight").value = weight;
    // the number field empties what is not an HTML number ("+1", "0x10"), which sent no weight (a review)
    if ($("passage-weight").value !== weight || (weight !== "" && !Number.isFinite(Number(weight)))) {
      $("passage-weight").value = "";
      unreadable.push(`passage_weight “${weight}” is not a number`);
    }
    let filters = {};
    if (params.has("filters")) {
      try {
        filters = parseExact(params.get("filters")); // a shared URL's 2^53+1 stays itself (an audit)
        if (filters === null || typeof filters !== "object" || Array.isArray(filters)) throw new Error("not a JSON object");
      } catch (err) {
        filters = {};
        unreadable.push(`filters could not be read (${err.message})`);
      }
    }
    if (unreadable.length) {
      showError(`This link's ${unreadable.join("; ")}. Nothing was searched: correct the link, or press Search to search without it.`);
    } else {
      await runSearch({ ...readForm(), filters });
    }
  }
  document.body.dataset.ready = "1";
}

if (typeof document !== "undefined") {
  document.addEventListener("DOMContentLoaded", start);
}
if (typeof module !== "undefined") {
  module.exports = { segments, drawnSpans, csvCell, toCSV, toJSONL, slug, parseExact, exactJSON, ownValue, withOwn };
}
