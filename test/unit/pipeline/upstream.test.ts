// The upstream pool loads undici's Agent on its own, not the package index (fetch, WebSocket,
// the cache and the mocks): about 7 MB of resident memory the proxy never uses. Checked on the
// compiled tree in a fresh process, since this test process loads undici's index itself.
import { execFileSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

describe('createDispatcher', () => {
  it('builds a working Agent without loading the undici package index', () => {
    const script = `
      import { createRequire } from 'node:module';
      const { createDispatcher } = await import('./dist/pipeline/upstream.js');
      const a = createDispatcher({ timeout: 1, connectTimeout: 1, connections: 4 });
      const loaded = Object.keys(createRequire(import.meta.url).cache).filter((f) => f.includes('/node_modules/undici/'));
      console.log(JSON.stringify({ kind: a.constructor.name, dispatch: typeof a.dispatch, loaded: loaded.map((f) => f.split('/node_modules/undici/')[1]) }));
      await a.close();`;
    const out = JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', script], { cwd: ROOT, encoding: 'utf8', timeout: 20_000 }));
    expect(out.kind).toBe('Agent');
    expect(out.dispatch).toBe('function');
    expect(out.loaded).toContain('lib/dispatcher/agent.js');
    expect(out.loaded).not.toContain('index.js');
    expect(out.loaded.some((f: string) => f.startsWith('lib/web/'))).toBe(false);
  });
});
