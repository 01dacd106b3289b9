// Credential custody: the sidecar holds the Twilio/Vapi secrets so the app need not. Both
// official SDKs refuse to send without a secret, so an app configures the placeholder
// `breakwater` (Twilio Basic `<sid>:breakwater`, Vapi `Bearer breakwater`). A placeholder is
// replaced by the held credentials, or refused 401 credentials_missing when none are held: a
// placeholder sent upstream would only earn a 401 there and count against the account.
// Otherwise credentials are injected only when the app sent no Authorization (or when the
// policy says to replace it). The header value is computed once at build time.
import type { Exchange, Next, Reply, Stage } from '../pipeline/exchange.js';
import { proxyError } from '../errors.js';
import { oneByte } from '../http/headers.js';

export interface CredentialConfig {
  type: 'none' | 'basic' | 'bearer';
  username: string;
  password: string;
  token: string;
  replace: boolean;
}

/** The secret an app configures in its SDK when the sidecar holds the real one (SPEC). */
export const PLACEHOLDER_SECRET = 'breakwater';

export function authorizationValue(c: CredentialConfig): string | undefined {
  if (c.type === 'basic' && c.username !== '' && c.password !== '') return `Basic ${Buffer.from(`${c.username}:${c.password}`).toString('base64')}`;
  if (c.type === 'bearer' && c.token !== '') return `Bearer ${c.token}`;
  return undefined;
}

const BASIC = /^basic[ \t]+([A-Za-z0-9+/=]+)[ \t]*$/i;
const BEARER = /^bearer(?:[ \t]+(\S*))?[ \t]*$/i;

/**
 * What an app-sent Authorization is: the placeholder, an empty Bearer (an SDK given an empty
 * token; as good as none), or a real credential. The auth scheme is case-insensitive (RFC 9110
 * §11.1); the secret is not.
 */
export function classifyAuthorization(v: string): 'placeholder' | 'empty' | 'credential' {
  // Scheme first, by its first byte: most values are one of the two, and neither needs a regex
  // unless it could be a placeholder.
  const c = v.charCodeAt(0) | 0x20;
  if (c === 0x62 /* b */) {
    const bearer = BEARER.exec(v);
    if (bearer !== null) return bearer[1] === undefined || bearer[1] === '' ? 'empty' : bearer[1] === PLACEHOLDER_SECRET ? 'placeholder' : 'credential';
    const basic = BASIC.exec(v);
    if (basic !== null) {
      const pair = Buffer.from(basic[1]!, 'base64').toString('latin1');
      // user-id and password split at the first colon (RFC 7617 §2): a user-id has none.
      const colon = pair.indexOf(':');
      if (colon >= 0 && pair.slice(colon + 1) === PLACEHOLDER_SECRET) return 'placeholder';
    }
  }
  return 'credential';
}

export function credentials(c: CredentialConfig): Stage {
  // A one-byte copy (see oneByte): it is part of every upstream request head.
  const value = authorizationValue(c);
  const injected = value === undefined ? undefined : oneByte(value);
  const replace = c.replace;
  return function credentialsStage(ex: Exchange, next: Next): Promise<Reply> {
    const sent = ex.req.headers.authorization;
    if (sent === undefined) {
      ex.authorization = injected;
      return next(ex);
    }
    const kind = classifyAuthorization(sent);
    if (kind === 'placeholder' && injected === undefined) return Promise.resolve(proxyError('credentials_missing'));
    if (kind === 'credential') ex.authorization = replace && injected !== undefined ? injected : sent;
    // A placeholder or an empty Bearer is as good as none: without held credentials an empty
    // Bearer sends nothing.
    else ex.authorization = injected;
    return next(ex);
  };
}
