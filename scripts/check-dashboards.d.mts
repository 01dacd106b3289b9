// Types for scripts/check-dashboards.mjs, so the vitest suites (TypeScript) can import it.
export interface Dashboard {
  uid: string;
  title: string;
  panels: Array<{ id: number; title: string; type: string; targets?: Array<{ refId: string; expr: string }>; [k: string]: unknown }>;
  templating: { list: Array<Record<string, unknown>> };
  [k: string]: unknown;
}
export interface Query {
  source: string;
  panel: number | string;
  title: string;
  refId: string;
  expr: string;
}
export interface QueryResult extends Query {
  promql: string;
  ok: boolean;
  detail: string;
  series: number;
}
export interface ToolResult {
  ok: boolean;
  code: number | null;
  output: string;
}
export interface Stack {
  promUrl: string;
  proxyPort: number;
  adminPort: number;
  promPort: number;
  dir: string;
  proxyLog: string;
  promLog: string;
  stop(): Promise<void>;
}
export interface LiveReport {
  dashboardResults: QueryResult[];
  alertResults: QueryResult[];
  missingProxyMetrics: string[];
  names: Set<string>;
  declared: Set<string>;
}

export const ROOT: string;
export const DASHBOARD_DIR: string;
export const RULES_FILE: string;
export const RULES_TEST_FILE: string;
export const GRAFANA_VARS: Record<string, string>;

export function loadDashboards(dir?: string): Array<{ file: string; name: string; dashboard: Dashboard }>;
export function validateDashboard(dashboard: unknown, name?: string): string[];
export function dashboardQueries(dashboard: Dashboard, source?: string): Query[];
export function substituteGrafanaVars(expr: string, vars?: Record<string, string>): string;
export function metricNames(expr: string): string[];
export function promtool(args: string[], opts?: { input?: string }): ToolResult;
export function checkRules(file?: string): ToolResult;
export function testRules(file?: string): ToolResult;
export function lintQueriesOffline(queries: Array<{ expr: string }>): ToolResult;
export function alertRules(file?: string): Array<{ alert: string; expr: string; group: string }>;
export function freePort(): Promise<number>;
export function promApi(
  promUrl: string,
  path: string,
  params?: Record<string, string | string[]>,
): Promise<{ ok: boolean; status: number; body?: any; error?: string }>;
export function startStack(opts?: { rulesFile?: string; log?: (line: string) => void }): Promise<Stack>;
export function generateLoad(
  stack: Stack,
  opts?: { log?: (line: string) => void },
): Promise<{ counts: Record<string, number>; recovered: boolean; ms: number }>;
export function knownMetricNames(promUrl: string): Promise<Set<string>>;
export function evaluateQueries(promUrl: string, queries: Query[], opts?: { requireData?: boolean; names?: Set<string> }): Promise<QueryResult[]>;
export function evaluateDashboard(
  promUrl: string,
  dashboard: Dashboard,
  opts?: { requireData?: boolean; names?: Set<string>; source?: string },
): Promise<QueryResult[]>;
export function evaluateVariables(promUrl: string, dashboard: Dashboard, source?: string): Promise<QueryResult[]>;
export function declaredMetricNames(adminPort: number): Promise<Set<string>>;
export function evaluateAlerts(promUrl: string, rulesFile?: string, opts?: { names?: Set<string>; declared?: Set<string> }): Promise<QueryResult[]>;
export function renameMetric(dashboard: Dashboard, from: string, to: string): Dashboard;
export function negativeProof(
  promUrl: string,
  dashboard: Dashboard,
  opts?: { names?: Set<string> },
): Promise<{ ok: boolean; renamed: string; failed: QueryResult[] }>;
export function formatResult(r: QueryResult): string;
export function checkStatic(opts?: { dashboards?: Array<{ name: string; dashboard: Dashboard }>; rulesFile?: string; rulesTestFile?: string }): {
  ok: boolean;
  lines: string[];
  queries: Query[];
};
export function checkLive(stack: Stack, opts?: { dashboards?: Array<{ name: string; dashboard: Dashboard }>; rulesFile?: string }): Promise<LiveReport>;
