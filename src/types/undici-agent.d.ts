// undici's Agent module on its own (see src/pipeline/upstream.ts): the same class the package
// index exports, typed from it.
declare module 'undici/lib/dispatcher/agent.js' {
  import { Agent } from 'undici';
  export default Agent;
}
