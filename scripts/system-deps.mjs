#!/usr/bin/env node
// The tests drive real programs (Redis, Sentinel, Prometheus, Alertmanager, Chromium, OpenSSL), so
// `npm test` starts by making sure they are here. On a fresh Debian machine where it may (root, or
// BREAKWATER_INSTALL_DEPS=1 with passwordless sudo) it installs them with apt; otherwise it stops at
// once and names the one command that does, rather than letting forty tests fail one by one.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

// binary → Debian package that provides it
export const NEEDED = {
  'redis-server': 'redis-server',
  'redis-sentinel': 'redis-sentinel',
  'redis-cli': 'redis-tools',
  prometheus: 'prometheus',
  promtool: 'prometheus',
  'prometheus-alertmanager': 'prometheus-alertmanager',
  chromium: 'chromium',
  openssl: 'openssl',
};

const onPath = (bin) => spawnSync('sh', ['-c', `command -v ${bin}`], { stdio: 'ignore' }).status === 0;
const missing = () => [
  ...new Set(
    Object.entries(NEEDED)
      .filter(([bin]) => !onPath(bin))
      .map(([, pkg]) => pkg),
  ),
];

let pkgs = missing();
if (pkgs.length > 0) {
  const command = `apt-get update && apt-get install -y --no-install-recommends ${pkgs.join(' ')}`;
  const root = process.getuid?.() === 0;
  const mayInstall = existsSync('/usr/bin/apt-get') && (root || process.env.BREAKWATER_INSTALL_DEPS === '1');
  if (!mayInstall) {
    console.error(`test: missing system packages: ${pkgs.join(', ')}\ntest: install them with:\n  sudo sh -c '${command}'`);
    process.exit(1);
  }
  console.log(`test: installing ${pkgs.join(' ')} (apt)`);
  const sudo = root ? [] : ['sudo', '-n'];
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const run = (args) => execFileSync(sudo[0] ?? args[0], sudo.length ? [...sudo.slice(1), ...args] : args.slice(1), { stdio: 'inherit', env });
  try {
    run(['/usr/bin/apt-get', 'update', '-qq']);
    run(['/usr/bin/apt-get', 'install', '-y', '-qq', '--no-install-recommends', ...pkgs]);
  } catch (err) {
    console.error(`test: apt failed (${err.message}); install by hand with:\n  sudo sh -c '${command}'`);
    process.exit(1);
  }
  pkgs = missing();
  if (pkgs.length > 0) {
    console.error(`test: still missing after apt: ${pkgs.join(', ')}`);
    process.exit(1);
  }
}
