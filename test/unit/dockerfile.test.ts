// The image and deployment files, checked without a Docker engine: the Dockerfile through
// dockerfile-utils plus our own rules (scripts/lint-dockerfile.mjs), and the compose file,
// .dockerignore and .env.example against the default policy they have to agree with.
import { existsSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { lintDockerfile, lintDockerfileText, POLICY_PATH } from '../../scripts/lint-dockerfile.mjs';

const repoPath = (p: string) => new URL(`../../${p}`, import.meta.url);
const read = (p: string) => readFileSync(repoPath(p), 'utf8');
const dockerfile = read('Dockerfile');
const rulesOf = (text: string) => [...new Set(lintDockerfileText(text).findings.map((f) => f.rule))].sort();

/** Every variable the default policy interpolates (in values, not comments), e.g. PROXY_PORT. */
const policyVariables = (() => {
  const names = new Set<string>();
  const walk = (v: unknown): void => {
    if (typeof v === 'string')
      for (const m of v.matchAll(/\$\{([A-Za-z_][A-Za-z0-9_]*)/g)) names.add(m[1]!); // nested defaults too
    else if (v && typeof v === 'object') Object.values(v).forEach(walk);
  };
  walk(parse(read('config/policy.yaml')));
  return [...names];
})();

describe('Dockerfile', () => {
  it('passes dockerfile-utils and every image rule', () => {
    const result = lintDockerfile();
    expect(result.findings).toEqual([]);
    expect(result.ok).toBe(true);
  });

  it('has the shape the acceptance check looks for', () => {
    expect((dockerfile.match(/^FROM\s/gim) ?? []).length).toBeGreaterThanOrEqual(2);
    expect(dockerfile).toMatch(/^USER\s+(?!root)\S+/im);
    expect(dockerfile).toMatch(/^HEALTHCHECK\s/im);
    expect(dockerfile).toMatch(/^EXPOSE\s/im);
  });

  it('rejects a root, shell-form, unchecked image with exactly those findings', () => {
    const bad = [
      'FROM node:24-bookworm-slim AS build',
      'RUN npm ci',
      'FROM node:24-bookworm-slim',
      'ENV NODE_ENV=production ADMIN_HOST=0.0.0.0',
      'RUN npm ci --omit=dev --ignore-scripts',
      `COPY config/policy.yaml ${POLICY_PATH}`,
      'USER root',
      'EXPOSE 8080 9090',
      `CMD node bin/breakwater.js start --config ${POLICY_PATH}`,
      '',
    ].join('\n');
    const result = lintDockerfileText(bad);
    expect(result.ok).toBe(false);
    expect(result.findings.map((f) => [f.rule, f.line ?? null]).sort()).toEqual([
      ['healthcheck-missing', null],
      ['root-user', 7],
      ['shell-form-cmd', 9],
    ]);
  });

  // Each row breaks one thing in the real Dockerfile and names the rule that must catch it.
  const mutations: { desc: string; from: string | RegExp; to: string; rules: string[] }[] = [
    { desc: 'runtime install keeps dev dependencies', from: 'npm ci --omit=dev --ignore-scripts', to: 'npm ci', rules: ['ignore-scripts', 'omit-dev'] },
    { desc: 'runtime install would run prepare (tsc is absent)', from: '--omit=dev --ignore-scripts', to: '--omit=dev', rules: ['ignore-scripts'] },
    { desc: 'single stage', from: /^[\s\S]*?(?=^FROM node:24-bookworm-slim AS runtime)/m, to: '', rules: ['multi-stage'] },
    { desc: 'final stage on an older Node', from: 'FROM node:24-bookworm-slim AS runtime', to: 'FROM node:20-bookworm-slim AS runtime', rules: ['final-base'] },
    { desc: 'runs as uid 0', from: /^USER .*$/m, to: 'USER 0', rules: ['root-user'] },
    { desc: 'no USER at all', from: /^USER .*\n/m, to: '', rules: ['root-user'] },
    { desc: 'shell-form HEALTHCHECK', from: /CMD \["node", "-e", .*\]$/m, to: 'CMD curl -f http://127.0.0.1:9090/healthz', rules: ['healthcheck-shell-form'] },
    { desc: 'HEALTHCHECK NONE', from: /^HEALTHCHECK [\s\S]*?\]$/m, to: 'HEALTHCHECK NONE', rules: ['healthcheck-missing'] },
    { desc: 'shell-form ENTRYPOINT', from: /^ENTRYPOINT .*$/m, to: 'ENTRYPOINT node /app/bin/breakwater.js', rules: ['shell-form-entrypoint'] },
    { desc: 'admin port not exposed', from: /^EXPOSE .*$/m, to: 'EXPOSE 8080', rules: ['expose'] },
    { desc: 'admin listener on loopback only', from: /^(\s+)ADMIN_HOST=0\.0\.0\.0/m, to: '$1ADMIN_HOST=127.0.0.1', rules: ['admin-host'] },
    { desc: 'policy somewhere else', from: new RegExp(POLICY_PATH.replace(/[./]/g, '\\$&'), 'g'), to: '/app/config/policy.yaml', rules: ['policy-path'] },
    { desc: 'stop signal that skips the drain', from: /^STOPSIGNAL .*$/m, to: 'STOPSIGNAL SIGKILL', rules: ['stopsignal'] },
    { desc: 'an instruction the builder rejects', from: /^EXPOSE .*$/m, to: 'EXPOSE 8080 9090 http', rules: ['dockerfile-utils'] },
  ];
  it.each(mutations)('catches: $desc', ({ from, to, rules }) => {
    const mutated = dockerfile.replace(from, to);
    expect(mutated).not.toBe(dockerfile);
    expect(rulesOf(mutated)).toEqual([...rules].sort());
  });
});

describe('.dockerignore', () => {
  const patterns = read('.dockerignore')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#') && !l.startsWith('!'));
  const ignored = (path: string) =>
    patterns.some((p) =>
      new RegExp(
        `^${p
          .replace(/\/$/, '')
          .replace(/[.+^${}()|[\]\\]/g, '\\$&')
          .replace(/\*/g, '[^/]*')}(/|$)`,
      ).test(path),
    );

  it('keeps dependencies, build output, VCS data and secrets out of the build context', () => {
    for (const path of ['node_modules', 'dist', '.git', 'test', 'bench/results', 'docs', 'coverage', 'npm-debug.log', '.env', '.env.production']) {
      expect(ignored(path), path).toBe(true);
    }
  });

  it('keeps every file the Dockerfile copies from the context', () => {
    const sources = [...dockerfile.matchAll(/^COPY\s+(?!--from)(.+)$/gm)].flatMap((m) => m[1]!.trim().split(/\s+/).slice(0, -1));
    expect(sources.length).toBeGreaterThan(0);
    for (const source of sources) expect(ignored(source), source).toBe(false);
  });
});

describe('docker-compose.yml', () => {
  const compose = parse(read('docker-compose.yml')) as {
    services: Record<
      string,
      { build?: string; image?: string; environment?: Record<string, string | null>; volumes?: string[]; stop_grace_period?: string; depends_on?: unknown }
    >;
  };
  const bw = compose.services.breakwater!;

  it('runs the app, Breakwater, Redis, Prometheus, Alertmanager and Grafana', () => {
    expect(Object.keys(compose.services).sort()).toEqual(['alertmanager', 'app', 'breakwater', 'grafana', 'prometheus', 'redis']);
    expect(bw.build).toBe('.');
    expect(compose.services.redis!.image).toMatch(/^redis:7/);
  });

  it('shares limits through Redis, scrapes the admin port, and starts in stub mode', () => {
    expect(bw.environment).toMatchObject({ RATE_LIMIT_STORE: 'redis', REDIS_URL: 'redis://redis:6379', ADMIN_HOST: '0.0.0.0' });
    expect(bw.environment!.INTEGRATIONS_STUB_MODE).toBe('${INTEGRATIONS_STUB_MODE:-true}');
  });

  it('keeps the credential-injecting proxy port unpublished; the app reaches it on the private network', () => {
    const services = compose.services as Record<string, { ports?: string[]; environment?: Record<string, string | null> }>;
    // The app is another container: loopback would not reach it, so 0.0.0.0, and safe only unpublished.
    expect(bw.environment!.PROXY_HOST).toBe('0.0.0.0');
    expect(services.app!.environment!.BREAKWATER_URL).toBe('http://breakwater:8080');
    const published = Object.values(services).flatMap((s) => s.ports ?? []);
    expect(published.length).toBeGreaterThan(0);
    for (const p of published) expect(p, p).toMatch(/^127\.0\.0\.1:\d+:\d+$/);
    expect((services.breakwater!.ports ?? []).map((p) => p.split(':').at(-1))).not.toContain('8080');
  });

  it("the Kubernetes example binds the proxy to the pod's loopback and declares no proxy port", () => {
    const doc = read('docs/deployment.md');
    const block = /## Kubernetes[^]*?```yaml\n([^]*?)```/.exec(doc)?.[1];
    expect(block).toBeDefined();
    const dep = parse(block!) as { kind: string; spec: { template: { spec: { initContainers?: any[]; containers: any[] } } } };
    expect(dep.kind).toBe('Deployment');
    const pod = dep.spec.template.spec;
    const sidecar = [...(pod.initContainers ?? []), ...pod.containers].find((c) => c.name === 'breakwater');
    expect(sidecar.env).toContainEqual({ name: 'PROXY_HOST', value: '127.0.0.1' });
    expect((sidecar.ports ?? []).map((p: { containerPort: number }) => p.containerPort)).not.toContain(8080);
    const app = pod.containers.find((c) => c.name === 'app');
    expect(JSON.stringify(app.env)).toContain('http://127.0.0.1:8080/');
  });

  it('passes every variable the default policy reads', () => {
    expect(policyVariables.length).toBeGreaterThan(10);
    for (const name of policyVariables) expect(Object.keys(bw.environment!), name).toContain(name);
  });

  it('leaves credentials unset rather than empty, so their *_FILE variants can apply', () => {
    for (const name of ['TWILIO_ACCOUNT_SID', 'TWILIO_AUTH_TOKEN', 'TWILIO_API_KEY_SID', 'TWILIO_API_KEY_SECRET', 'VAPI_API_KEY']) {
      expect(bw.environment![name], name).toBeNull();
    }
  });

  it('gives the drain time to finish before the container is killed', () => {
    const drainTimeout = Number((parse(read('config/policy.yaml')) as { server: { drainTimeout: number } }).server.drainTimeout);
    const grace = Number(/^(\d+)s$/.exec(bw.stop_grace_period ?? '')?.[1]);
    expect(grace).toBeGreaterThanOrEqual(drainTimeout + 5);
  });

  it('mounts monitoring files that exist in the repository where Prometheus and Grafana look', () => {
    const mounts = ['prometheus', 'grafana']
      .flatMap((s) => compose.services[s]!.volumes ?? [])
      .map((v) => v.split(':')[0]!)
      .filter((src) => src.startsWith('./'));
    expect(mounts.sort()).toEqual([
      './grafana/dashboards',
      './grafana/provisioning/dashboards.yml',
      './grafana/provisioning/datasources.yml',
      './prometheus/alerts.yml',
      './prometheus/prometheus.yml',
    ]);
    for (const src of mounts) expect(existsSync(repoPath(src)), src).toBe(true);
  });

  it('points Prometheus at Breakwater and the mounted rules, Grafana at Prometheus and the mounted dashboards', () => {
    const mountsOf = (service: string) => new Map((compose.services[service]!.volumes ?? []).map((v) => v.split(':') as [string, string]));
    const prom = mountsOf('prometheus');
    const promConfig = parse(read('prometheus/prometheus.yml')) as { rule_files?: string[]; scrape_configs: { static_configs?: { targets: string[] }[] }[] };
    const targets = promConfig.scrape_configs.flatMap((c) => c.static_configs ?? []).flatMap((c) => c.targets);
    expect(targets).toContain('breakwater:9090');
    expect(prom.get('./prometheus/prometheus.yml')).toBe('/etc/prometheus/prometheus.yml');
    for (const rule of promConfig.rule_files ?? []) {
      expect([...prom.values()], rule).toContain(rule.startsWith('/') ? rule : `/etc/prometheus/${rule}`);
    }

    const grafana = mountsOf('grafana');
    expect(grafana.get('./grafana/provisioning/datasources.yml')).toMatch(/^\/etc\/grafana\/provisioning\/datasources\/[^/]+\.ya?ml$/);
    expect(grafana.get('./grafana/provisioning/dashboards.yml')).toMatch(/^\/etc\/grafana\/provisioning\/dashboards\/[^/]+\.ya?ml$/);
    const datasources = parse(read('grafana/provisioning/datasources.yml')) as { datasources: { url: string }[] };
    expect(datasources.datasources.map((d) => d.url)).toContain('http://prometheus:9090');
    const providers = parse(read('grafana/provisioning/dashboards.yml')) as { providers: { options: { path: string } }[] };
    expect(providers.providers.map((p) => p.options.path)).toContain(grafana.get('./grafana/dashboards'));
  });
});

describe('.env.example', () => {
  const text = read('.env.example');
  it('documents every variable of the default policy with its default', () => {
    for (const name of policyVariables) expect(text, name).toMatch(new RegExp(`^#?${name}=`, 'm'));
  });
  it('offers a *_FILE variant for every secret', () => {
    for (const name of ['TWILIO_ACCOUNT_SID', 'TWILIO_AUTH_TOKEN', 'TWILIO_API_KEY_SID', 'TWILIO_API_KEY_SECRET', 'VAPI_API_KEY']) {
      expect(text, name).toMatch(new RegExp(`^#?${name}_FILE=`, 'm'));
    }
  });
});
