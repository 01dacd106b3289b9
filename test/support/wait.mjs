// The two waiting helpers every test and script shares. Plain JavaScript (typed by wait.d.mts)
// so that scripts run by bare `node`, such as test/soak/soak.mjs, import the same code as the
// TypeScript tests.
import net from 'node:net';

/**
 * Polls `probe` until it returns something truthy and resolves with that value, or with
 * `undefined` once a probe made at or after `timeoutMs` has failed, or once `exited` has
 * settled (a child process died: waiting longer cannot help). Never rejects on timeout: the
 * caller asserts on the result, with its own message.
 */
export async function waitFor(probe, { timeoutMs = 5000, everyMs = 25, exited } = {}) {
  const deadline = Date.now() + timeoutMs;
  let gone = false;
  void exited?.then(
    () => (gone = true),
    () => (gone = true),
  );
  // The count bounds the loop even if the clock stalls.
  for (let i = 0; i < 100_000; i++) {
    const v = await probe();
    if (v) return v;
    if (gone || Date.now() >= deadline) return undefined;
    await new Promise((r) => setTimeout(r, everyMs));
  }
  return undefined;
}

/**
 * A loopback port that was free a moment ago (listen on 0, read it, close): for a server a test
 * starts itself on a known port, or as a destination where nothing listens.
 */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}
