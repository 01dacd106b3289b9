// A fake Exchange for stage unit tests: only plain fields, a request object carrying headers and
// a peer address, and no sockets. Stages under test read what they need from it.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { newExchange, type Exchange, type Reply } from '../../../src/pipeline/exchange.js';

export interface FakeExchangeInit extends Partial<Omit<Exchange, 'req' | 'res'>> {
  headers?: Record<string, string | string[]>;
  remoteAddress?: string;
}

export function fakeExchange(init: FakeExchangeInit = {}): Exchange {
  const { headers = {}, remoteAddress = '127.0.0.1', ...rest } = init;
  const req = { headers, rawHeaders: [], socket: { remoteAddress } } as unknown as IncomingMessage;
  return {
    ...newExchange(req, {} as ServerResponse, 0, 'req-1', 'GET', '/', ''),
    routePath: '/',
    upstreamPath: '/',
    origin: 'https://upstream.test',
    host: 'upstream.test',
    clientKey: 'client-a',
    clientIp: '127.0.0.1',
    ...rest,
  };
}

/** What a forwarded, streamed answer looks like to the stages above `forward`. */
export const SENT_200: Reply = { kind: 'sent', status: 200, outcome: 'forwarded' };
