// Types for scripts/check-install.mjs, so TypeScript tests can import it.
export interface CheckInstallStep {
  name: string;
  ok: boolean;
  detail: string;
  ms: number;
}

export interface CheckInstallResult {
  mode: 'pack' | 'image';
  ok: boolean;
  steps: CheckInstallStep[];
  /** pack: tarball, tarballBytes, unpackedBytes, files, installMs; image: imageAppBytes, `stage <name> RUN ms`;
   * both: packages, nodeModulesBytes, healthyMs, stubMs, stopMs. */
  figures: Record<string, number | string>;
  /** The tail of the proxy's stdout and stderr. */
  logs: string;
  /** The temp folder, when kept. */
  dir: string | null;
}

export interface CheckInstallOptions {
  /** pack: npm pack + npm install <tarball>; image: the Dockerfile carried out without Docker. Default pack. */
  mode?: 'pack' | 'image';
  /** The project to check; default the repository this script lives in. */
  root?: string;
  /** Keep the temp folder. */
  keep?: boolean;
  /** pack mode: run `npm run build` even when dist/cli.js exists. */
  rebuild?: boolean;
  /** Progress lines as steps finish; null for silence (the default). */
  log?: ((line: string) => void) | null;
  healthTimeoutMs?: number;
  stopTimeoutMs?: number;
  installTimeoutMs?: number;
}

export function checkInstall(options?: CheckInstallOptions): Promise<CheckInstallResult>;
export function formatReport(results: CheckInstallResult[]): string;
