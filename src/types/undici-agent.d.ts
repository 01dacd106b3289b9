// undici's Agent module on its own (see src/pipeline/upstream.ts). Typed as the part of the class
// that module really provides: `request`, `stream` and the other convenience methods are added
// to Dispatcher.prototype by the package index, which is not loaded, so they must not compile.
declare module 'undici/lib/dispatcher/agent.js' {
  import type { Agent } from 'undici';
  export type PoolAgent = Pick<Agent, 'dispatch' | 'close' | 'destroy' | 'stats'>;
  const AgentModule: new (options?: Agent.Options) => PoolAgent;
  export default AgentModule;
}
