// Keyset pagination over (created_at, id): stable under inserts, and each page
// costs an index range scan however deep it is. The cursor is the row's id
// (REST's `after`), to which GraphQL's cursors add its creation time in ms. The
// position is the row's, looked up under the same tenant scope, so another tenant's
// row gives no position (a bare id of one is BAD_USER_INPUT, as below; with a time,
// only that time is used, as for a deleted row: nothing of the other tenant's is read; a row
// of the tenant's in another list, bare or with a time, is BAD_USER_INPUT too);
// should the row have been deleted meanwhile, a cursor
// with the time (GraphQL's, and REST's Link header) goes on from that time; a
// bare id of a row that is gone is BAD_USER_INPUT rather than a silent end (a
// deleted subscription's row is kept, unseen, so its id still has a position).
import type { EntityManager } from 'typeorm';
import { badInput } from '../errors.js';
import { isUuid } from '../ids.js';
import { queryRows } from './query.js';
import type { TenantId } from './tenant-scope.js';

export interface PageWindow {
  after?: string;
  before?: string;
  limit: number;
  inverted: boolean;
}

/** A GraphQL cursor: the row's id and, after a `~`, its creation time in ms. */
export function cursorOf(row: { id: string; createdAt: Date }): string {
  return `${row.id}~${row.createdAt.getTime()}`;
}

export const DEFAULT_PAGE_SIZE = 20;
export const MAX_PAGE_SIZE = 100;

export async function keysetPage<Row>(
  manager: EntityManager,
  options: {
    /** Whose rows: the cursors' own rows are looked up within the tenant's too (not by row-level security alone). */
    tenantId: TenantId;
    table: string;
    columns: string;
    where: string[];
    params: unknown[];
    window: PageWindow;
    newestFirst: boolean;
  },
): Promise<Row[]> {
  const { table, columns, window } = options;
  const where = [...options.where];
  const params = [...options.params];
  // Added only with a cursor: a parameter no statement uses has no type PostgreSQL can tell.
  let tenantParam: string | undefined;
  // Walking backwards (before/last) reverses the order; Pothos puts the page back in order.
  const descending = options.newestFirst !== window.inverted;
  for (const [name, cursor, forward] of [
    ['after', window.after, true],
    ['before', window.before, false],
  ] as const) {
    if (cursor === undefined) continue;
    const { id, at } = parseCursor(name, cursor);
    if (!tenantParam) tenantParam = `$${params.push(options.tenantId)}`;
    params.push(id, at);
    const [idParam, atParam] = [`$${params.length - 1}`, `$${params.length}`];
    const towardsEnd = forward !== options.newestFirst; // ascending walk past the cursor
    const op = towardsEnd ? '>' : '<';
    // The row's own time, to the microsecond; the cursor's millisecond only if the row is gone,
    // taken at the side that skips nothing (rows of that millisecond may then come again).
    const gone = `to_timestamp((${atParam}::bigint + ${towardsEnd ? 0 : 1}) / 1000.0)`;
    where.push(`(created_at, id) ${op} (coalesce((select created_at from ${table} where tenant_id = ${tenantParam} and id = ${idParam}::uuid), ${gone}), ${idParam}::uuid)`);
  }
  params.push(window.limit);
  const order = descending ? 'desc' : 'asc';
  const rows = await queryRows<Row>(
    manager,
    `select ${columns} from ${table} where ${where.join(' and ')}
      order by created_at ${order}, id ${order} limit $${params.length}`,
    params,
  );
  // An empty page after a bare id: the end of the list, or a row that is not there to go on from.
  // A cursor with a time gives a page whatever row it names: it is checked for another list's.
  if (!rows.length || window.after?.includes('~') || window.before?.includes('~')) await checkCursors(manager, options.tenantId, table, window);
  return rows;
}

/**
 * The rows a cursor of another list names, each table with what it lists: a cursor given to the
 * wrong list (a subscription's to the deliveries, an event's id) is refused as such rather than
 * read as a time, which gives a page of this list that the client did not ask for.
 */
const LISTED = [
  ['webhook_deliveries', 'a delivery'],
  ['webhook_subscriptions', 'a webhook subscription'],
  ['webhook_events', 'an event'],
] as const;

/**
 * The cursors of a page, checked against the tenant's rows: a bare id given as `after` or
 * `before` must be a row of the list (see keysetPage), and no cursor may name a row of another
 * list. (A timed cursor naming no row of the tenant's goes on from its time: its row was
 * deleted, or is another tenant's, which must not be told apart.)
 */
export async function checkCursors(manager: EntityManager, tenantId: TenantId, table: string, window: Pick<PageWindow, 'after' | 'before'>): Promise<void> {
  for (const [name, cursor] of [
    ['after', window.after],
    ['before', window.before],
  ] as const) {
    if (cursor === undefined) continue;
    const bare = !cursor.includes('~');
    const { id } = parseCursor(name, cursor);
    const others = LISTED.filter(([other]) => other !== table);
    const [row] = await queryRows<{ here: boolean; elsewhere: string | null }>(
      manager,
      `select exists (select 1 from ${table} where tenant_id = $1 and id = $2) as here,
        coalesce(${others.map(([other, what]) => `(select '${what}' from ${other} where tenant_id = $1 and id = $2)`).join(', ')}) as elsewhere`,
      [tenantId, id],
    );
    if (row?.elsewhere) throw badInput(name, `is not a cursor of this list: ${row.elsewhere}'s id; page with the cursors this list gives`);
    if (bare && !row?.here) {
      throw badInput(name, `no item of this list has the id ${cursor} (deleted since?); page with the cursors Hookline gives (REST: the Link header), which go on past a deleted item`);
    }
  }
}

/**
 * A cursor as this list writes them: a row's id, and the millisecond of its time (`id~ms`), or a
 * bare id. Anything else is refused, naming the argument (`after` or `before`).
 */
export function parseCursor(name: 'after' | 'before', cursor: string): { id: string; at: number | null } {
  const [id, ms, ...rest] = cursor.split('~');
  // Digits only: Number() also reads '' (as 0), ' 1' and '0x0', cursors this list never wrote.
  const at = ms === undefined || !/^\d{1,15}$/.test(ms) ? null : Number(ms);
  if (!isUuid(id!) || rest.length || (ms !== undefined && at === null)) {
    throw badInput(name, 'is not a cursor of this list');
  }
  return { id: id!, at };
}
