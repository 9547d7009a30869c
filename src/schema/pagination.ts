import { resolveCursorConnection, type DefaultConnectionArguments } from '@pothos/plugin-relay';
import { DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, cursorOf, type PageWindow } from '../db/keyset.js';
import { badInput } from '../errors.js';
import { dependsOnArguments } from '../server/complexity.js';

/** A connection's cost: its selection repeats once per row of the page asked for. */
export const pageComplexity = (args: { first?: number | null; last?: number | null }, ctx: unknown) => {
  dependsOnArguments(ctx);
  return { field: 1, multiplier: Math.min(Math.max(args.first ?? args.last ?? DEFAULT_PAGE_SIZE, 0), MAX_PAGE_SIZE) };
};

/** A Relay connection page of rows in (created_at, id) order (see db/keyset.ts). */
export function pageOf<T extends { id: string; createdAt: Date }>(args: DefaultConnectionArguments, fetch: (window: PageWindow) => Promise<T[]>) {
  for (const field of ['first', 'last'] as const) {
    if ((args[field] ?? 0) > MAX_PAGE_SIZE) throw badInput(field, `must be at most ${MAX_PAGE_SIZE} (a page holds at most ${MAX_PAGE_SIZE} rows)`);
  }
  return resolveCursorConnection(
    { args, defaultSize: DEFAULT_PAGE_SIZE, maxSize: MAX_PAGE_SIZE, toCursor: (row: T) => cursorOf(row) },
    (window: PageWindow): Promise<T[]> => fetch(window),
  ) as Promise<{ edges: Array<{ cursor: string; node: T }>; pageInfo: { hasNextPage: boolean; hasPreviousPage: boolean; startCursor?: string | null; endCursor?: string | null } }>;
}
