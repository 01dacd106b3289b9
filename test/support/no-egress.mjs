// Preloaded into a process under test (`node --import ./test/support/no-egress.mjs …`): refuses,
// before any packet is sent, every TCP connect to a host that is not loopback and every name
// lookup, and writes each refused target as one line to $NO_EGRESS_LOG. A test that asserts the
// file stays empty proves the process never dialled a real provider; one that expects a line
// proves the guard sees a dial, without the network ever being touched.
//
// Every TCP or TLS client socket (net.connect, tls.connect, undici's connector, http.request)
// ends in net.Socket.prototype.connect before its DNS lookup, so that is where targets are read;
// dns.lookup and the resolvers are refused too, for code that resolves names by itself.
import { appendFileSync } from 'node:fs';
import dns from 'node:dns';
import net from 'node:net';

const LOG = process.env.NO_EGRESS_LOG;
if (!LOG) throw new Error('no-egress: set NO_EGRESS_LOG to the file that records refused targets');

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);
const isLoopback = (host) => LOOPBACK.has(String(host).replace(/^\[|\]$/g, '')) || /^127\.\d+\.\d+\.\d+$/.test(String(host));
const record = (what) => appendFileSync(LOG, `${what}\n`);
const refused = (code, what) => Object.assign(new Error(`no-egress: refused ${what}`), { code, errno: code, syscall: 'connect' });

/** The [host, port] of Socket#connect's argument forms; undefined for a Unix socket path. */
function target(args) {
  const [first, second] = args;
  const opts = Array.isArray(first) ? first[0] : first; // the normalised [options, cb] form net.connect passes
  if (opts !== null && typeof opts === 'object') {
    if (opts.path !== undefined) return undefined;
    return [opts.host ?? 'localhost', opts.port];
  }
  if (typeof first === 'number' || /^\d+$/.test(String(first))) return [typeof second === 'string' ? second : 'localhost', first];
  return undefined; // a path
}

const connect = net.Socket.prototype.connect;
net.Socket.prototype.connect = function guardedConnect(...args) {
  const t = target(args);
  if (t !== undefined && !isLoopback(t[0])) {
    const what = `connect ${t[0]}:${t[1]}`;
    record(what);
    // As if the peer refused: the caller's error path runs, and nothing left this machine.
    process.nextTick(() => this.destroy(refused('ECONNREFUSED', what)));
    return this;
  }
  return connect.apply(this, args);
};

const lookup = dns.lookup;
dns.lookup = function guardedLookup(hostname, options, callback) {
  const cb = typeof options === 'function' ? options : callback;
  if (!isLoopback(hostname)) {
    record(`lookup ${hostname}`);
    process.nextTick(() => cb(Object.assign(new Error(`no-egress: refused lookup ${hostname}`), { code: 'ENOTFOUND', hostname })));
    return {};
  }
  return lookup.call(this, hostname, options, callback);
};
const promisesLookup = dns.promises.lookup;
dns.promises.lookup = async function guardedLookup(hostname, options) {
  if (!isLoopback(hostname)) {
    record(`lookup ${hostname}`);
    throw Object.assign(new Error(`no-egress: refused lookup ${hostname}`), { code: 'ENOTFOUND', hostname });
  }
  return promisesLookup.call(this, hostname, options);
};
for (const api of [dns, dns.promises, dns.Resolver.prototype, dns.promises.Resolver.prototype]) {
  for (const name of ['resolve', 'resolve4', 'resolve6', 'resolveAny', 'resolveCname', 'resolveSrv', 'resolveTxt']) {
    if (typeof api[name] !== 'function') continue;
    api[name] = function guardedResolve(hostname) {
      record(`resolve ${hostname}`);
      throw Object.assign(new Error(`no-egress: refused resolve ${hostname}`), { code: 'ENOTFOUND', hostname });
    };
  }
}
