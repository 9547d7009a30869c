import type { ServerResponse } from 'node:http';
import { createGraphQLError } from 'graphql-yoga';
import type { WebSocket } from 'ws';
import { requireTenant } from '../auth/viewer.js';
import { SubscriberTooSlowError, type DeliverySnapshot } from '../live/delivery-updates.js';
import { SERVER_BEHIND, type ServerBehindAware } from '../live/shared-execution.js';
import { checkEventName } from '../webhooks/catalog.js';
import { checkFilterId, type DeliveryRow } from '../webhooks/deliveries.js';
import { builder } from './builder.js';
import { DeliveryRef, DeliveryStatusEnum } from './refs.js';

/** WebSocket close code for a subscriber that fell too far behind. */
export const WS_CLOSE_TOO_SLOW = 4429;

/** The least time a WebSocket cut off as too slow has to take its close frame before it is terminated. */
export const CUT_OFF_CLOSE_MS = 5_000;

/**
 * Over Server-Sent Events, a client that fell a buffer behind may still be reading: the stream
 * ends with the RATE_LIMITED error (see next()), after what is already queued, as the WebSocket
 * close does. One that reads nothing (stalled, or still not at that end within the stall limit)
 * would never pull it: its connection is cut.
 */
function closeWhenStuck(res: ServerResponse, error: SubscriberTooSlowError, stallMs: number): void {
  if (error.stalled) {
    res.destroy();
    return;
  }
  const timer = setTimeout(() => res.destroy(), stallMs);
  timer.unref();
  res.once('close', () => clearTimeout(timer));
}

builder.subscriptionType({ description: 'Live updates, over graphql-ws (WebSocket) or Server-Sent Events on /graphql.' });

builder.subscriptionField('deliveryUpdated', (t) =>
  t.field({
    type: DeliveryRef,
    description:
      'Emits a delivery of the tenant when it is created and on every change of its status or attempts, whichever process made it. All filters are optional.',
    args: {
      event: t.arg.string({ description: 'Only deliveries of this event: an event name. Empty, as every filter: no filter.' }),
      subscriptionId: t.arg.id({ description: 'Only deliveries to this subscription. Empty: no filter.' }),
      deliveryId: t.arg.id({ description: 'Only this delivery. Empty: no filter.' }),
      status: t.arg({ type: DeliveryStatusEnum, description: 'Only updates that leave a delivery with this status.' }),
    },
    subscribe: async (_root, args, ctx) => {
      const tenantId = requireTenant(ctx.viewer);
      // As the deliveries query takes it: an event name; "" is no filter, as for every filter.
      if (args.event) checkEventName('event', args.event);
      if (args.subscriptionId) checkFilterId('subscriptionId', String(args.subscriptionId));
      if (args.deliveryId) checkFilterId('deliveryId', String(args.deliveryId));
      const live = ctx.services.live;
      if (!live) throw new Error('live updates are not served by this process');
      const metrics = ctx.services.metrics;
      metrics?.liveClients.inc();
      let counted = true;
      const uncount = () => {
        if (counted) metrics?.liveClients.dec();
        counted = false;
      };
      const { socket, res } = ctx as { socket?: WebSocket; res?: ServerResponse };
      const apiKeyId = ctx.viewer.kind === 'tenant' ? ctx.viewer.apiKeyId : undefined;
      let source: AsyncIterableIterator<DeliverySnapshot>;
      try {
        source = await live.subscribe(
          tenantId,
          apiKeyId,
          {
            event: args.event,
            // Compared with the lower-case ids PostgreSQL writes; queries take ids in either case.
            subscriptionId: args.subscriptionId ? String(args.subscriptionId).toLowerCase() : null,
            deliveryId: args.deliveryId ? String(args.deliveryId).toLowerCase() : null,
            status: args.status,
          },
          (error) => {
            uncount();
            metrics?.liveCutOff.inc();
            // Over WebSocket the close frame, with its reason, follows what is already queued;
            // a client that has not read it after the stall limit (at least CUT_OFF_CLOSE_MS) is
            // cut: ws would wait 30 s for its answer, holding what is queued for it meanwhile,
            // while its slot, free at once, took another subscriber (one tenant's dashboards that
            // stopped reading and reconnected ran the process out of memory).
            if (socket) {
              socket.close(WS_CLOSE_TOO_SLOW, 'too slow: stopped reading live updates');
              setTimeout(() => socket.terminate(), Math.max(live.stallMs, CUT_OFF_CLOSE_MS)).unref();
            } else if (res) closeWhenStuck(res, error, live.stallMs);
          },
          socket,
        );
      } catch (error) {
        uncount();
        throw error;
      }
      // Revoked before the stream watched for it (while the request's key was being looked up,
      // say): the notice found nothing to end. The stream ends at once.
      if (apiKeyId && ctx.services.apiKeys.isRevoked(apiKeyId)) await source.return!();
      const iterator: AsyncIterableIterator<DeliverySnapshot> & ServerBehindAware = {
        async next() {
          try {
            const result = await source.next();
            if (result.done) uncount();
            return result;
          } catch (error) {
            uncount();
            if (error instanceof SubscriberTooSlowError) {
              throw createGraphQLError(error.message, { extensions: { code: 'RATE_LIMITED' } });
            }
            throw error;
          }
        },
        async return() {
          uncount();
          return source.return!();
        },
        [SERVER_BEHIND]: (behind: boolean) => (source as ServerBehindAware)[SERVER_BEHIND]?.(behind),
        [Symbol.asyncIterator]() {
          return iterator;
        },
      };
      if (res) {
        // Over Server-Sent Events the subscription ends with the connection. A client gone while it
        // was being set up is never told so by the server adapter, which drops the response
        // without cancelling its stream: without this, the subscription (its LISTEN demand, its
        // live_listeners row) would stay until the process ends.
        const close = () => void iterator.return!();
        if (res.destroyed || res.writableEnded) close();
        else res.once('close', close);
      }
      return iterator;
    },
    resolve: (snapshot) => snapshot as unknown as DeliveryRow,
  }),
);
