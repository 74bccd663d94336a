// GraphQL over HTTP and WebSocket with the operations of /monitor/operations.graphql, by name.
// The file is the one source of every operation the page sends: each request carries the named operation
// and the fragments it uses (found by name), nothing written here.

import { ROOT } from "./util.js";

const HEADERS_KEY = "graphiql:headers"; // the same place GraphiQL keeps its Headers tab

let definitions = null; // name -> text

/** Split a GraphQL document into its top-level definitions (comments and strings skipped). */
function split(text) {
  const found = new Map();
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === "#") { while (i < text.length && text[i] !== "\n") i++; continue; }
    if (/\s|,/.test(c)) { i++; continue; }
    const head = /^(query|mutation|subscription|fragment)\s+([A-Za-z_]\w*)/.exec(text.slice(i, i + 200));
    if (!head) throw new Error(`operations: unexpected text at ${i}`);
    let depth = 0, j = i, inString = false;
    for (; j < text.length; j++) {
      const d = text[j];
      if (inString) { if (d === "\\") j++; else if (d === '"') inString = false; continue; }
      if (d === '"') inString = true;
      else if (d === "#") { while (j < text.length && text[j] !== "\n") j++; }
      else if (d === "{") depth++;
      else if (d === "}" && --depth === 0) break;
    }
    found.set(head[2], text.slice(i, j + 1));
    i = j + 1;
  }
  return found;
}

export async function loadOperations() {
  const answer = await fetch(`${ROOT}/monitor/operations.graphql`);
  definitions = split(await answer.text());
}

/** The document for operation `name`: it and every fragment it spreads, transitively. */
export function documentFor(name) {
  const parts = [definitions.get(name)];
  if (!parts[0]) throw new Error(`no operation ${name}`);
  const seen = new Set();
  for (let k = 0; k < parts.length; k++) {
    for (const m of parts[k].matchAll(/\.\.\.\s*([A-Za-z_]\w*)/g)) {
      if (m[1] === "on" || seen.has(m[1])) continue;
      seen.add(m[1]);
      parts.push(definitions.get(m[1]));
    }
  }
  return parts.join("\n");
}

// --- The key (stored in this browser only, where GraphiQL keeps its headers) ---

export function storedHeaders() {
  try {
    const value = JSON.parse(localStorage.getItem(HEADERS_KEY) || "{}");
    return value && typeof value === "object" && !Array.isArray(value) ? value : {};
  } catch (e) {
    return {};
  }
}

export function authorization() {
  const headers = storedHeaders();
  for (const [k, v] of Object.entries(headers)) if (k.toLowerCase() === "authorization") return String(v);
  return null;
}

export function setKey(key) {
  const headers = storedHeaders();
  for (const k of Object.keys(headers)) if (k.toLowerCase() === "authorization") delete headers[k];
  if (key) headers.Authorization = key.startsWith("Bearer ") ? key : `Bearer ${key}`;
  localStorage.setItem(HEADERS_KEY, JSON.stringify(headers, null, 2));
}

/** POST one named operation; resolves to `data`, throws with the errors' messages. */
export async function request(name, variables = {}) {
  const headers = { "Content-Type": "application/json", Accept: "application/graphql-response+json" };
  const auth = authorization();
  if (auth) headers.Authorization = auth;
  const answer = await fetch(`${ROOT}/graphql`, {
    method: "POST", headers, body: JSON.stringify({ query: documentFor(name), operationName: name, variables }),
  });
  let body;
  try { body = await answer.json(); } catch (e) { throw new Error(`${answer.status} ${answer.statusText}`); }
  if (body.errors && body.errors.length && !body.data) {
    const error = new Error(body.errors.map((e) => e.message).join("; "));
    error.codes = body.errors.map((e) => e.extensions && e.extensions.code);
    throw error;
  }
  if (body.errors && body.errors.length) {
    const error = new Error(body.errors.map((e) => e.message).join("; "));
    error.codes = body.errors.map((e) => e.extensions && e.extensions.code);
    error.data = body.data;
    throw error;
  }
  return body.data;
}

export function wsUrl() {
  return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + ROOT + "/graphql";
}

/** A new graphql-transport-ws client that never retries by itself (the caller resumes from its cursor). */
export function wsClient(on = {}) {
  return graphqlWs.createClient({
    url: wsUrl(),
    lazy: false,
    retryAttempts: 0,
    shouldRetry: () => false,
    keepAlive: 10_000,
    connectionParams: () => {
      const auth = authorization();
      return auth ? { Authorization: auth } : {};
    },
    on,
  });
}

/** Subscribe with `client` to the named operation; returns the function that stops it. */
export function subscribe(client, name, variables, sink) {
  return client.subscribe({ query: documentFor(name), operationName: name, variables }, sink);
}
