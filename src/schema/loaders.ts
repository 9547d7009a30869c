// Per-request batch loaders, so a list of deliveries asks for its
// subscriptions and events in one query each, not one per row.
import DataLoader from 'dataloader';
import { requireTenant, type Viewer } from '../auth/viewer.js';
import { queryRows } from '../db/query.js';
import { withTenant } from '../db/tenant-scope.js';
import type { WebhookSubscription } from '../entities/webhook-subscription.js';
import type { Services } from '../services.js';
import { EVENT_COLUMNS, type AttemptRow, type DeliveryRow, type EventRow } from '../webhooks/deliveries.js';

export interface Loaders {
  delivery: DataLoader<string, DeliveryRow | null>;
  subscription: DataLoader<string, WebhookSubscription | null>;
  event: DataLoader<string, EventRow | null>;
  /** An event's body, parsed (a delivery's payload), by event id: each read once for a page. */
  payload: DataLoader<string, string | null>;
  /** A delivery's attempt log, up to the attempts its row counts. */
  attempts: DataLoader<{ id: string; upTo: number }, AttemptRow[], string>;
}

function byId<T extends { id: string }>(ids: readonly string[], rows: T[]): Array<T | null> {
  const map = new Map(rows.map((r) => [r.id, r]));
  return ids.map((id) => map.get(id) ?? null);
}

export function createLoaders(services: Services, viewer: Viewer): Loaders {
  return {
    delivery: new DataLoader(async (ids) => byId(ids, await services.deliveries.findMany(requireTenant(viewer), [...ids]))),
    subscription: new DataLoader(async (ids) => byId(ids, await services.subscriptions.findMany(requireTenant(viewer), [...ids]))),
    event: new DataLoader(async (ids) => {
      const tenantId = requireTenant(viewer);
      const rows = await withTenant(services.dataSource, tenantId, (m) =>
        queryRows<EventRow>(
          m,
          `select ${EVENT_COLUMNS} from webhook_events where tenant_id = $1 and id = any($2)`,
          [tenantId, [...ids]],
        ),
      );
      return byId(ids, rows);
    }),
    payload: new DataLoader(async (ids) => {
      const bodies = await services.deliveries.payloads(requireTenant(viewer), ids);
      return ids.map((id) => bodies.get(id) ?? null);
    }),
    attempts: new DataLoader(
      (keys) => services.deliveries.attemptLogs(requireTenant(viewer), keys),
      { cacheKeyFn: (k) => `${k.id}:${k.upTo}` },
    ),
  };
}
