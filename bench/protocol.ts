// Messages between bench/run.ts and its child processes (IPC).

export interface ReceiverStats {
  /** Requests received. */
  count: number;
  /** Distinct webhook-ids received. */
  distinct: number;
  /** Requests whose webhook-id had been received before (redeliveries). */
  duplicates: number;
  /** Requests without a webhook-signature header. */
  unsigned: number;
  /** Sampled requests (1 in 50) whose signature was checked and found right, or wrong. */
  verified: number;
  badSignatures: number;
  /** Request body bytes received. */
  bytes: number;
  /** Arrival of the first and of the last request (shared clock, ms). */
  first: number;
  last: number;
}

export type ReceiverRequest =
  | { type: 'reset'; seq: number }
  | { type: 'stats'; seq: number }
  | { type: 'waitCount'; seq: number; count: number; timeoutMs: number }
  | { type: 'waitIds'; seq: number; ids: string[]; timeoutMs: number };

export type ReceiverReply =
  | { type: 'listening'; port: number; pid: number }
  | { type: 'reply'; seq: number; stats: ReceiverStats; times?: number[]; timedOut?: boolean };

export type SubscribersRequest =
  | { type: 'connect'; seq: number; url: string; token: string; clients: number; parallel: number; timeoutMs: number }
  | { type: 'await'; seq: number; deliveryId: string; status: string; timeoutMs: number }
  | { type: 'close'; seq: number };

export type SubscribersReply =
  | { type: 'started'; pid: number }
  | {
      type: 'reply';
      seq: number;
      /** connect: clients subscribed; await: clients that received the update. */
      count: number;
      /** await: first and last receipt (shared clock, ms). */
      first?: number;
      last?: number;
      errors?: string[];
      timedOut?: boolean;
    };
