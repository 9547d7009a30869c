import { resolveCursorConnection, type DefaultConnectionArguments } from '@pothos/plugin-relay';
import { validateConnectionArguments } from '@pothos/core';
import { DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, cursorOf, parseCursor, type PageWindow } from '../db/keyset.js';
import { badInput } from '../errors.js';
import { dependsOnArguments } from '../server/complexity.js';

/** A connection's cost: its selection repeats once per row of the page asked for. */
export const pageComplexity = (args: { first?: number | null; last?: number | null }, ctx: unknown) => {
  dependsOnArguments(ctx);
  return { field: 1, multiplier: Math.min(Math.max(args.first ?? args.last ?? DEFAULT_PAGE_SIZE, 0), MAX_PAGE_SIZE) };
};

interface Page<T> {
  edges: Array<{ cursor: string; node: T }>;
  pageInfo: { hasNextPage: boolean; hasPreviousPage: boolean; startCursor?: string | null; endCursor?: string | null };
}

/**
 * Whether a page's arguments can be answered, before anything is read: sizes within 0 and
 * MAX_PAGE_SIZE, not `first` and `last` together, cursors of the form this list writes (whether
 * a bare id's row is there, and whether a cursor names another list's row, is checked apart:
 * checkCursors). Run before a mutation executes,
 * on every page its selection asks for (server/graphql.ts): one refused after the write would
 * answer `data: null` for a change made. A query's page is checked as it runs (pageOf, then
 * the list's own filters, then the cursors), whose first refusal is the one answered.
 */
export function checkPageArguments(args: DefaultConnectionArguments): void {
  checkPageSizes(args);
  validateConnectionArguments(args); // what Pothos refuses next (negative sizes), with its words
  for (const field of ['after', 'before'] as const) {
    const cursor = args[field];
    if (cursor != null) parseCursor(field, cursor);
  }
}

/** The checks pageOf makes itself, in its order; Pothos's and the cursors' come after. */
function checkPageSizes(args: DefaultConnectionArguments): void {
  for (const field of ['first', 'last'] as const) {
    if ((args[field] ?? 0) > MAX_PAGE_SIZE) throw badInput(field, `must be at most ${MAX_PAGE_SIZE} (a page holds at most ${MAX_PAGE_SIZE} rows)`);
    // Named, as the bound above is (Pothos's own refusal names no field).
    if ((args[field] ?? 0) < 0) throw badInput(field, `must be 0 to ${MAX_PAGE_SIZE}`);
  }
  // Together, one of them would be passed over (Pothos pages forward by `first`, last ignored).
  if (args.first != null && args.last != null) {
    throw badInput('last', 'cannot be given with first: page forward with first (and after), or backward with last (and before)');
  }
}

/**
 * A page field's list, for the check of bare-id cursors before a mutation writes: the field's
 * `extensions` (see server/graphql.ts).
 */
export const keysetTable = (table: string) => ({ keysetTable: table });

/**
 * A Relay connection page of rows in (created_at, id) order (see db/keyset.ts). An empty page
 * with no cursor given (first: 0, or a list with nothing in it) has no cursor to give either:
 * null, where Pothos answers "", which this list would refuse as `after`. So first: 0 answers
 * hasNextPage with endCursor null, and the next page is asked for with no `after`, from the start.
 */
export async function pageOf<T extends { id: string; createdAt: Date }>(args: DefaultConnectionArguments, fetch: (window: PageWindow) => Promise<T[]>): Promise<Page<T>> {
  checkPageSizes(args);
  const page = (await resolveCursorConnection(
    { args, defaultSize: DEFAULT_PAGE_SIZE, maxSize: MAX_PAGE_SIZE, toCursor: (row: T) => cursorOf(row) },
    (window: PageWindow): Promise<T[]> => fetch(window),
  )) as Page<T>;
  if (page.pageInfo.startCursor === '') page.pageInfo.startCursor = null;
  if (page.pageInfo.endCursor === '') page.pageInfo.endCursor = null;
  return page;
}
