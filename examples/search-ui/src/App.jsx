// A stock Elastic Search UI app. The only nerindex-specific part is the connector: Search UI's
// ApiProxyConnector posts to <basePath>/search and <basePath>/autocomplete, which `nerindex serve`
// answers (NerindexConnector below only shows nerindex's own error message). The search box takes an entity type in plain words ("dinosaur"); results carry the
// passage text with the matching mentions in <em> (text.snippet), their score, and metadata.
import { ApiProxyConnector } from "@elastic/search-ui-elasticsearch-connector/api-proxy";
import {
  ErrorBoundary,
  Facet,
  Paging,
  PagingInfo,
  Results,
  ResultsPerPage,
  SearchBox,
  SearchProvider,
  WithSearch,
} from "@elastic/react-search-ui";
import { Layout } from "@elastic/react-search-ui-views";

// The stock connector, saying what went wrong: nerindex answers an error as {"error": {"message"}}
// (a term over 200 characters, a page size above the server's --max-page-size, a replaced store),
// where the stock one shows only the HTTP status text ("Bad Request").
class NerindexConnector extends ApiProxyConnector {
  async request(path, body) {
    const response = await fetch(`${this.basePath}${path}`, {
      method: "POST",
      ...this.fetchOptions,
      headers: { "Content-Type": "application/json", ...this.fetchOptions.headers },
      body: JSON.stringify(body),
    });
    if (!response.ok) {
      const message = await response.json().then((b) => b?.error?.message, () => null);
      throw new Error(message || `the server answered ${response.status} ${response.statusText}: is nerindex serve running?`);
    }
    return response.json();
  }
}

// basePath may also be an absolute URL of a nerindex server started with --cors-origin.
const connector = new NerindexConnector({ basePath: import.meta.env.VITE_NERINDEX_API || "/api" });

const config = {
  apiConnector: connector,
  alwaysSearchOnInitialLoad: false,
  trackUrlState: true,
  searchQuery: {
    result_fields: {
      title: { raw: {} },
      text: { snippet: { fallback: true } },
      mentions: { raw: {} },
      score: { raw: {} },
      topic: { raw: {} },
    },
    facets: { topic: { type: "value", size: 10 } },
    disjunctiveFacets: ["topic"],
  },
  autocompleteQuery: {
    // type phrases from the nerindex catalog, as you type
    suggestions: { types: { types: { fields: ["type"] } }, size: 6 },
  },
};

export default function App() {
  return (
    <SearchProvider config={config}>
      <WithSearch mapContextToProps={({ wasSearched }) => ({ wasSearched })}>
        {({ wasSearched }) => (
          // the error in place of the results only: the search box stays, to search again
          <Layout
            header={
              <SearchBox
                autocompleteSuggestions={true}
                inputProps={{ placeholder: "An entity type, e.g. dinosaur" }}
              />
            }
            sideContent={
              <div>
                {wasSearched && <ResultsPerPage />}
                <Facet field="topic" label="Topic" filterType="any" />
              </div>
            }
            bodyContent={
              <ErrorBoundary>
                <Results titleField="title" shouldTrackClickThrough={false} />
              </ErrorBoundary>
            }
            bodyHeader={wasSearched && <PagingInfo />}
            bodyFooter={<Paging />}
          />
        )}
      </WithSearch>
    </SearchProvider>
  );
}
