// Types for scripts/lint-dockerfile.mjs, so TypeScript tests can import it.
export interface DockerfileFinding {
  /** Stable rule name: dockerfile-utils, multi-stage, final-base, root-user, healthcheck-missing,
   * healthcheck-shell-form, healthcheck-target, no-command, shell-form-cmd, shell-form-entrypoint,
   * command, expose, admin-host, node-env, policy-path, omit-dev, ignore-scripts, stopsignal. */
  rule: string;
  message: string;
  /** 1-based line, when the finding has one. */
  line?: number;
}

export interface DockerfileLintResult {
  ok: boolean;
  findings: DockerfileFinding[];
  warnings: DockerfileFinding[];
}

export const POLICY_PATH: string;
export const REQUIRED_PORTS: string[];
export function lintDockerfileText(content: string): DockerfileLintResult;
export function lintDockerfile(path?: string): DockerfileLintResult & { path: string };
