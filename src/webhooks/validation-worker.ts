// A validation thread (see validation-pool.ts): compiles tenants' schemas and checks events'
// data against them, off the thread that serves every tenant's requests.
import { parentPort } from 'node:worker_threads';
import { compileProblem, createAjv, schemaProblem, verdictOf, type ValidateFunction } from './schema-engine.js';
import type { CheckReply, CheckRequest } from './validation-pool.js';

const ajv = createAjv();
const validators = new Map<string, ValidateFunction>();

/**
 * A compile's error, unless it is the engine's own failure (RE2's fixed memory full: an
 * emscripten abort), which is thrown on: the thread's, not the schema's (see the `failed` reply).
 */
function engineFailure(error: unknown): unknown {
  if (isEngineFailure(error)) throw error;
  return error;
}

/**
 * Told by its kind, not by words a tenant's pattern could hold (a SyntaxError quotes the
 * pattern): WebAssembly's own error, or emscripten's abort, whose message starts so.
 */
function isEngineFailure(error: unknown): boolean {
  if (error instanceof SyntaxError) return false;
  return error instanceof WebAssembly.RuntimeError || /^(abort\(|Cannot enlarge memory)/.test(String((error as Error)?.message ?? error));
}

function answer(request: CheckRequest): CheckReply {
  if (request.kind === 'schema') {
    try {
      return { seq: request.seq, problem: schemaProblem(ajv, request.schema) };
    } catch (error) {
      return { seq: request.seq, invalid: compileProblem(engineFailure(error)) };
    }
  }
  let validate = validators.get(request.typeId);
  if (!validate) {
    if (!request.schema) return { seq: request.seq, unknownType: true };
    try {
      validate = ajv.compile(request.schema);
    } catch (error) {
      return { seq: request.seq, invalid: compileProblem(engineFailure(error)) };
    }
    validators.set(request.typeId, validate);
    // The check's own deadline starts now.
    parentPort!.postMessage({ seq: request.seq, compiled: true });
  }
  return { seq: request.seq, verdict: verdictOf(validate, JSON.parse(request.dataJson)) };
}

parentPort!.on('message', (request: CheckRequest) => {
  let reply: CheckReply;
  try {
    reply = answer(request);
  } catch (error) {
    // An engine's failure (RE2's fixed memory full): this thread is replaced, and the check
    // tried once more on a fresh one. Its own words stay in the log's reach, not the tenant's.
    reply = { seq: request.seq, failed: isEngineFailure(error) ? 'the pattern engine ran out of memory' : String((error as Error)?.message ?? error).split('\n')[0]!.slice(0, 300) };
  }
  parentPort!.postMessage(reply);
});

// Loaded: the clock of the first check starts now.
parentPort!.postMessage({ ready: true });
