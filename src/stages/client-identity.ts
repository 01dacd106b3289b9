// Client identity for rate limits: the X-Client-Id header when present, else the peer IP.
// X-Forwarded-For is believed only when the peer is a configured trusted proxy, and then only
// up to the first address that is not itself trusted (nginx `real_ip_recursive`), so a client
// cannot pick its own identity by sending the header.
import { BlockList, isIP } from 'node:net';
import type { Exchange, Next, Reply, Stage } from '../pipeline/exchange.js';

const VALID_ID = /^[\x21-\x7e]{1,128}$/;

export function trustedProxies(cidrs: readonly string[]): BlockList | undefined {
  if (cidrs.length === 0) return undefined;
  const list = new BlockList();
  for (const c of cidrs) {
    const [addr, bits] = c.split('/');
    const type = isIP(addr!) === 6 ? 'ipv6' : 'ipv4';
    if (bits === undefined) list.addAddress(addr!, type);
    else list.addSubnet(addr!, Number(bits), type);
  }
  return list;
}

function normalise(ip: string): string {
  return ip.startsWith('::ffff:') ? ip.slice(7) : ip;
}

function isTrusted(list: BlockList, ip: string): boolean {
  const t = isIP(ip);
  return t !== 0 && list.check(ip, t === 6 ? 'ipv6' : 'ipv4');
}

export function resolveClientIp(peer: string, xff: string | undefined, trusted: BlockList | undefined): string {
  let ip = normalise(peer);
  if (!trusted || xff === undefined || !isTrusted(trusted, ip)) return ip;
  const hops = xff.split(',');
  for (let i = hops.length - 1; i >= 0; i--) {
    const hop = normalise(hops[i]!.trim());
    if (isIP(hop) === 0) break;
    ip = hop;
    if (!isTrusted(trusted, hop)) break;
  }
  return ip;
}

export function clientIdentity(header: string, trusted: BlockList | undefined): Stage {
  const name = header.toLowerCase();
  return function clientIdentityStage(ex: Exchange, next: Next): Promise<Reply> {
    const h = ex.req.headers;
    const xff = h['x-forwarded-for'];
    ex.clientIp = resolveClientIp(ex.req.socket.remoteAddress ?? '', Array.isArray(xff) ? xff.join(',') : xff, trusted);
    const id = h[name];
    // Ids and peer addresses share one key space: an id spelled as an address is moved out of the
    // addresses' part of it, or a client could spend another's IP budget by sending its address.
    ex.clientKey = typeof id === 'string' && VALID_ID.test(id) ? (isIP(id) === 0 && !id.startsWith('::ffff:') ? id : `id:${id}`) : ex.clientIp;
    return next(ex);
  };
}
