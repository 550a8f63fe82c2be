// Calls to this node's admin API, with the token the operator signed in with.
//
// Invariant: the token lives in this module's memory and nowhere else: no
// cookie, no web storage, no URL. Closing or reloading
// the tab forgets it; requests omit credentials, so no ambient authority
// (a cookie the browser might attach) ever reaches the API.

let token = null;

/** An answer the API refused, with its status and message. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** Remembers `candidate` for this tab's calls. */
export function useToken(candidate) {
  token = candidate;
}

/** Forgets the token. */
export function forgetToken() {
  token = null;
}

/** `method` `path` with `body` (JSON) as the signed-in caller; the reply's JSON, or text for /metrics. */
export async function call(method, path, body) {
  if (token === null) throw new ApiError(401, 'not signed in');
  const headers = { Authorization: `Bearer ${token}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
      credentials: 'omit',
      redirect: 'error',
    });
  } catch (e) {
    throw new ApiError(0, `the node could not be reached (${e.message})`);
  }
  const text = await response.text();
  if (!response.ok) {
    let message = text || response.statusText;
    try {
      message = JSON.parse(text).error.message;
    } catch {
      // not the API's JSON error: keep the text
    }
    throw new ApiError(response.status, message);
  }
  return path === '/metrics' ? text : JSON.parse(text);
}

/** `/v1/...` path segments, each percent-encoded. */
export function path(...segments) {
  return `/v1/${segments.map(encodeURIComponent).join('/')}`;
}

/** Standard base64 of `bytes`. */
export function base64(bytes) {
  let binary = '';
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary);
}
