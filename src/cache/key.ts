// Cache keys. A key names the request method (HEAD reads GET entries, so it is always GET), the
// normalised target URI, the credential's identity and the request headers the policy names.
// The credential enters only as a keyed hash: a key (logged, or stored in a shared store) never
// carries the secret, and an outsider cannot test a guessed token against it.
import { createHmac } from 'node:crypto';

/**
 * Path and query with the query's pairs sorted by name (stable, so repeated names keep their
 * order): `?b=1&a=2` and `?a=2&b=1` are one resource to Twilio and Vapi, as to Varnish's
 * std.querysort. Encodings are made uniform by decoding and re-encoding every pair.
 */
export function normaliseUri(path: string, query: string): string {
  if (query === '' || query === '?') return path;
  const params = new URLSearchParams(query);
  params.sort();
  const s = params.toString();
  return s === '' ? path : `${path}?${s}`;
}

/** A keyed hash of the Authorization value; '-' when there is none. */
export function credentialId(secret: Buffer | string, authorization: string | undefined): string {
  if (authorization === undefined || authorization === '') return '-';
  return createHmac('sha256', secret).update(authorization).digest('base64url').slice(0, 32);
}

/** The value a header contributes to a key or a Vary match: absent and empty differ. */
export function headerValue(headers: Readonly<Record<string, string | string[] | undefined>>, name: string): string {
  const v = headers[name];
  if (v === undefined) return '\u0001';
  return Array.isArray(v) ? v.join(', ') : v;
}

export function cacheKey(
  upstream: string,
  uri: string,
  credential: string,
  keyHeaders: readonly string[],
  headers: Readonly<Record<string, string | string[] | undefined>>,
): string {
  let k = `${upstream}\u0000GET ${uri}\u0000${credential}`;
  for (const h of keyHeaders) k += `\u0000${h}:${headerValue(headers, h)}`;
  return k;
}

/** The target URI path (host and path, no query) a key was made for: what invalidation names. */
export function keyPath(key: string): string {
  const start = key.indexOf('\u0000GET ') + 5;
  const uri = key.slice(start, key.indexOf('\u0000', start));
  const q = uri.indexOf('?');
  return q < 0 ? uri : uri.slice(0, q);
}

/** The header names a response's Vary lists, lower-cased. */
export function varyNames(vary: string | string[] | undefined): string[] {
  if (vary === undefined) return [];
  return (Array.isArray(vary) ? vary.join(',') : vary)
    .split(',')
    .map((s) => s.trim().toLowerCase())
    .filter((s) => s !== '');
}
