// Time as Hookline reads it, replaceable in tests. On its own so that the library's
// declarations (webhooks/service.ts) do not bring in the server's types with it.

export interface Clock {
  now(): Date;
}

export const systemClock: Clock = { now: () => new Date() };
