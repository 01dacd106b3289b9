// Credential custody: the sidecar holds the Twilio/Vapi secrets so the app need not. They are
// injected only when the app sent no Authorization (or when the policy says to replace it),
// and the header value is computed once at build time, never per request.
import type { Exchange, Next, Reply, Stage } from '../pipeline/exchange.js';
import { oneByte } from '../http/headers.js';

export interface CredentialConfig {
  type: 'none' | 'basic' | 'bearer';
  username: string;
  password: string;
  token: string;
  replace: boolean;
}

export function authorizationValue(c: CredentialConfig): string | undefined {
  if (c.type === 'basic' && c.username !== '' && c.password !== '') return `Basic ${Buffer.from(`${c.username}:${c.password}`).toString('base64')}`;
  if (c.type === 'bearer' && c.token !== '') return `Bearer ${c.token}`;
  return undefined;
}

export function credentials(c: CredentialConfig): Stage {
  // A one-byte copy (see oneByte): it is part of every upstream request head.
  const value = authorizationValue(c);
  const injected = value === undefined ? undefined : oneByte(value);
  const replace = c.replace;
  return function credentialsStage(ex: Exchange, next: Next): Promise<Reply> {
    const sent = ex.req.headers.authorization;
    ex.authorization = injected !== undefined && (sent === undefined || replace) ? injected : sent;
    return next(ex);
  };
}
