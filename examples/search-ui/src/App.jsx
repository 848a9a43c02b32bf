// A stock Elastic Search UI app. The only nerindex-specific line is the connector: Search UI's
// ApiProxyConnector posts to <basePath>/search and <basePath>/autocomplete, which `nerindex serve`
// answers. The search box takes an entity type in plain words ("dinosaur"); results carry the
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

// basePath may also be an absolute URL of a nerindex server started with --cors-origin.
const connector = new ApiProxyConnector({ basePath: import.meta.env.VITE_NERINDEX_API || "/api" });

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
          <ErrorBoundary>
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
              bodyContent={<Results titleField="title" shouldTrackClickThrough={false} />}
              bodyHeader={wasSearched && <PagingInfo />}
              bodyFooter={<Paging />}
            />
          </ErrorBoundary>
        )}
      </WithSearch>
    </SearchProvider>
  );
}
