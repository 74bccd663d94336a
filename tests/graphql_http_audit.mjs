// Runs graphql-http's server audit (the GraphQL-over-HTTP spec's conformance checks) against a URL.
//
//   node tests/graphql_http_audit.mjs <node_modules parent dir> <GraphQL URL>
//
// graphql-http is installed at test time into a directory of its own (tests/test_graphql_http.py), so
// it is loaded from there rather than from a node_modules next to this script. Prints one JSON array on
// stdout: every audit's id, name, status (ok, notice, warn, error), and for the failed ones the reason,
// the answer's status and its body.
import { createRequire } from 'node:module';
import { join } from 'node:path';

const [installDir, url] = process.argv.slice(2);
if (!installDir || !url) {
  console.error('usage: node graphql_http_audit.mjs <install dir> <url>');
  process.exit(2);
}
const require = createRequire(join(installDir, 'node_modules', 'noop.js'));
const { auditServer } = require('graphql-http');

const results = await auditServer({ url });
const out = [];
for (const result of results) {
  const entry = { id: result.id, name: result.name, status: result.status };
  if (result.status !== 'ok') {
    entry.reason = result.reason;
    entry.httpStatus = result.response.status;
    entry.contentType = result.response.headers.get('content-type');
    try {
      entry.body = await result.response.text();
    } catch {
      entry.body = null; // already read by the audit
    }
  }
  out.push(entry);
}
console.log(JSON.stringify(out));
