// OpenTelemetry traces, off unless an exporter is configured through the standard OTEL_*
// variables (SPEC "Tracing"). Off, nothing is loaded and the request path pays one undefined
// check per request and per attempt. On, the SDK's 2.x line (its 3.x needs Node >= 22) is
// imported here, once: a SERVER span per request, a CLIENT span per upstream attempt whose
// context is the `traceparent` sent upstream, parent-based ratio sampling, OTLP over HTTP
// (protobuf or JSON) through a batch processor whose queue is bounded (spans beyond it are
// dropped, never buffered without limit) and whose export runs off the request path.
// Span names and attributes follow the stable HTTP semantic conventions, as Envoy's and
// Traefik's OpenTelemetry tracers do: `{method} {route}` with the policy's route name, never a
// raw path.
import type { Attributes, Context, Span, Tracer } from '@opentelemetry/api';
import type { Exchange } from './pipeline/exchange.js';

export interface ClientSpan {
  /** The `traceparent` (and `tracestate`) to send upstream for this attempt. */
  readonly headers: Record<string, string>;
  end(status: number, errorType: string | undefined, upstreamRequestId: string | undefined): void;
}

export interface Tracing {
  startServer(ex: Exchange): void;
  endServer(ex: Exchange, status: number, outcome: string): void;
  startClient(ex: Exchange): ClientSpan | undefined;
  /**
   * A resilience decision as an event on the request's SERVER span (`breakwater.breaker`,
   * `breakwater.rate_limit`, `breakwater.hold`, `breakwater.retry`, `breakwater.idempotency`), so a
   * trace shows why a request waited, was refused or was sent twice. Stages call it as
   * `tracing?.event(...)`: with tracing off that is one undefined check.
   */
  event(ex: Exchange, name: string, attributes: Attributes): void;
  /** The trace id of the request's SERVER span, when sampled, for the access line. */
  traceId(ex: Exchange): string | undefined;
  shutdown(): Promise<void>;
}

type Env = Record<string, string | undefined>;

/** True when the OTEL_* variables ask for a trace exporter (OTLP is the only one offered). */
export function tracingConfigured(env: Env): boolean {
  if (env.OTEL_SDK_DISABLED?.toLowerCase() === 'true') return false;
  const exporter = env.OTEL_TRACES_EXPORTER?.trim().toLowerCase();
  if (exporter === 'none') return false;
  if (exporter === 'otlp') return true;
  return Boolean(env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT || env.OTEL_EXPORTER_OTLP_ENDPOINT);
}

/** The process-wide tracing, set by start() when configured; undefined: tracing is off. */
export let tracing: Tracing | undefined;

const spans = new WeakMap<Exchange, Span>();

/** Loads the SDK and installs the process-wide tracing when the environment asks for it. */
export async function startTracing(env: Env, version: string, warn: (msg: string) => void): Promise<Tracing | undefined> {
  if (!tracingConfigured(env)) return undefined;
  const [api, core, base, resources] = await Promise.all([
    import('@opentelemetry/api'),
    import('@opentelemetry/core'),
    import('@opentelemetry/sdk-trace-base'),
    import('@opentelemetry/resources'),
  ]);
  const protocol = (env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL ?? env.OTEL_EXPORTER_OTLP_PROTOCOL ?? 'http/protobuf').trim();
  if (protocol !== 'http/protobuf' && protocol !== 'http/json') warn(`OTEL_EXPORTER_OTLP_PROTOCOL=${protocol} is not supported: using http/protobuf`);
  const { OTLPTraceExporter } =
    protocol === 'http/json' ? await import('@opentelemetry/exporter-trace-otlp-http') : await import('@opentelemetry/exporter-trace-otlp-proto');
  // The exporter reads its endpoint, headers and timeout from the OTEL_EXPORTER_OTLP_* variables.
  const exporter = new OTLPTraceExporter();
  const num = (v: string | undefined, dflt: number) => (v !== undefined && Number.isFinite(Number(v)) && Number(v) >= 0 ? Number(v) : dflt);
  const processor = new base.BatchSpanProcessor(exporter, {
    maxQueueSize: num(env.OTEL_BSP_MAX_QUEUE_SIZE, 2048),
    maxExportBatchSize: num(env.OTEL_BSP_MAX_EXPORT_BATCH_SIZE, 512),
    scheduledDelayMillis: num(env.OTEL_BSP_SCHEDULE_DELAY, 5000),
    exportTimeoutMillis: num(env.OTEL_BSP_EXPORT_TIMEOUT, 30000),
  });
  const provider = new base.BasicTracerProvider({
    // OTEL_RESOURCE_ATTRIBUTES (envDetector) over the defaults; OTEL_SERVICE_NAME over both.
    resource: resources
      .resourceFromAttributes({ 'service.name': 'breakwater', 'service.version': version })
      .merge(resources.detectResources({ detectors: [resources.envDetector] }))
      .merge(env.OTEL_SERVICE_NAME ? resources.resourceFromAttributes({ 'service.name': env.OTEL_SERVICE_NAME }) : null),
    sampler: sampler(base, env, warn),
    spanProcessors: [processor],
  });
  const tracer: Tracer = provider.getTracer('breakwater', version);
  const propagator = new core.W3CTraceContextPropagator();
  const getter = {
    get: (carrier: Exchange['req']['headers'], key: string) => carrier[key],
    keys: (carrier: Exchange['req']['headers']) => Object.keys(carrier),
  };
  const setter = { set: (carrier: Record<string, string>, key: string, value: string) => void (carrier[key] = value) };
  const { SpanKind, SpanStatusCode, ROOT_CONTEXT, trace } = api;

  const t: Tracing = {
    startServer(ex) {
      const parent: Context = propagator.extract(ROOT_CONTEXT, ex.req.headers, getter);
      const span = tracer.startSpan(
        ex.method,
        { kind: SpanKind.SERVER, attributes: { 'http.request.method': ex.method, 'url.scheme': 'http', x_request_id: ex.requestId } },
        parent,
      );
      spans.set(ex, span);
    },
    endServer(ex, status, outcome) {
      const span = spans.get(ex);
      if (span === undefined) return;
      spans.delete(ex);
      if (ex.route) {
        span.updateName(`${ex.method} ${ex.route}`);
        span.setAttribute('http.route', ex.route);
      }
      if (ex.upstream) span.setAttribute('breakwater.upstream', ex.upstream.name);
      span.setAttribute('http.response.status_code', status);
      span.setAttribute('breakwater.outcome', outcome);
      if (status >= 500) {
        span.setAttribute('error.type', outcome === 'forwarded' ? String(status) : outcome);
        span.setStatus({ code: SpanStatusCode.ERROR });
      }
      span.end();
    },
    startClient(ex) {
      const server = spans.get(ex);
      const parent = server ? trace.setSpan(ROOT_CONTEXT, server) : ROOT_CONTEXT;
      const colon = ex.host.lastIndexOf(':');
      const port = colon > 0 && !ex.host.endsWith(']') ? Number(ex.host.slice(colon + 1)) : NaN;
      const attributes: Attributes = {
        'http.request.method': ex.method,
        'server.address': Number.isInteger(port) ? ex.host.slice(0, colon) : ex.host,
        'url.full': scrubUrl(ex.origin, ex.upstreamPath),
      };
      if (Number.isInteger(port)) attributes['server.port'] = port;
      if (ex.retries > 0) attributes['http.request.resend_count'] = ex.retries;
      const span = tracer.startSpan(ex.route ? `${ex.method} ${ex.route}` : ex.method, { kind: SpanKind.CLIENT, attributes }, parent);
      const headers: Record<string, string> = {};
      propagator.inject(trace.setSpan(ROOT_CONTEXT, span), headers, setter);
      return {
        headers,
        end(status, errorType, upstreamRequestId) {
          if (status > 0) span.setAttribute('http.response.status_code', status);
          if (upstreamRequestId !== undefined) span.setAttribute('twilio.request_id', upstreamRequestId);
          if (errorType !== undefined || status >= 500) {
            span.setAttribute('error.type', errorType ?? String(status));
            span.setStatus({ code: SpanStatusCode.ERROR });
          }
          span.end();
        },
      };
    },
    event(ex, name, attributes) {
      const span = spans.get(ex);
      if (span !== undefined && span.isRecording()) span.addEvent(name, attributes);
    },
    traceId(ex) {
      const c = spans.get(ex)?.spanContext();
      return c && (c.traceFlags & 1) === 1 ? c.traceId : undefined;
    },
    // Bounded: a collector that is down must not hold the drain (the exporter retries with backoff).
    shutdown: () => {
      let timer: NodeJS.Timeout | undefined;
      const limit = new Promise<void>((r) => (timer = setTimeout(r, 2000).unref()));
      return Promise.race([provider.shutdown().catch(() => {}), limit]).finally(() => clearTimeout(timer));
    },
  };
  tracing = t;
  return t;
}

/** Stops exporting (flushing what is queued) and turns tracing off for this process. */
export async function stopTracing(): Promise<void> {
  const t = tracing;
  tracing = undefined;
  await t?.shutdown();
}

type Base = typeof import('@opentelemetry/sdk-trace-base');

/** OTEL_TRACES_SAMPLER / _ARG, default parentbased_always_on (the specification's default). */
function sampler(base: Base, env: Env, warn: (msg: string) => void) {
  const name = (env.OTEL_TRACES_SAMPLER ?? 'parentbased_always_on').trim().toLowerCase();
  const arg = Number(env.OTEL_TRACES_SAMPLER_ARG ?? '1');
  const ratio = Number.isFinite(arg) && arg >= 0 && arg <= 1 ? arg : 1;
  switch (name) {
    case 'always_on':
      return new base.AlwaysOnSampler();
    case 'always_off':
      return new base.AlwaysOffSampler();
    case 'traceidratio':
      return new base.TraceIdRatioBasedSampler(ratio);
    case 'parentbased_always_off':
      return new base.ParentBasedSampler({ root: new base.AlwaysOffSampler() });
    case 'parentbased_traceidratio':
      return new base.ParentBasedSampler({ root: new base.TraceIdRatioBasedSampler(ratio) });
    case 'parentbased_always_on':
      return new base.ParentBasedSampler({ root: new base.AlwaysOnSampler() });
    default:
      warn(`OTEL_TRACES_SAMPLER=${name} is not supported: using parentbased_always_on`);
      return new base.ParentBasedSampler({ root: new base.AlwaysOnSampler() });
  }
}

/**
 * The upstream URL without what may identify a person or an account: the query string, account
 * SIDs (AC + 32 hex) and anything that looks like a phone number are replaced.
 */
export function scrubUrl(origin: string, path: string): string {
  const q = path.indexOf('?');
  const p = (q < 0 ? path : path.slice(0, q)).replace(/\b(AC|PN|SM|MM|CA)[0-9a-f]{32}\b/gi, '$1{sid}').replace(/(?:%2B|\+)?\d{7,15}/gi, '{number}');
  return origin + p + (q < 0 ? '' : '?{query}');
}
