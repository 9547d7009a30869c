// Keyset pagination over (created_at, id): stable under inserts, and each page
// costs an index range scan however deep it is. The cursor is the row's id;
// the position is looked up under the same tenant scope, so a foreign cursor
// finds nothing.
import type { EntityManager } from 'typeorm';
import { badInput } from '../errors.js';
import { isUuid } from '../ids.js';
import { queryRows } from './query.js';

export interface PageWindow {
  after?: string;
  before?: string;
  limit: number;
  inverted: boolean;
}

export const DEFAULT_PAGE_SIZE = 20;
export const MAX_PAGE_SIZE = 100;

export async function keysetPage<Row>(
  manager: EntityManager,
  options: {
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
  // Walking backwards (before/last) reverses the order; Pothos puts the page back in order.
  const descending = options.newestFirst !== window.inverted;
  for (const [name, cursor, forward] of [
    ['after', window.after, true],
    ['before', window.before, false],
  ] as const) {
    if (cursor === undefined) continue;
    if (!isUuid(cursor)) throw badInput(name, 'is not a cursor of this list');
    params.push(cursor);
    const towardsEnd = forward !== options.newestFirst; // ascending walk past the cursor
    const op = towardsEnd ? '>' : '<';
    where.push(`(created_at, id) ${op} (select created_at, id from ${table} where id = $${params.length})`);
  }
  params.push(window.limit);
  const order = descending ? 'desc' : 'asc';
  return queryRows<Row>(
    manager,
    `select ${columns} from ${table} where ${where.join(' and ')}
      order by created_at ${order}, id ${order} limit $${params.length}`,
    params,
  );
}
