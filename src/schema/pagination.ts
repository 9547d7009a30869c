import { resolveCursorConnection, type DefaultConnectionArguments } from '@pothos/plugin-relay';
import { DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, cursorOf, type PageWindow } from '../db/keyset.js';

/** A Relay connection page of rows in (created_at, id) order (see db/keyset.ts). */
export function pageOf<T extends { id: string; createdAt: Date }>(args: DefaultConnectionArguments, fetch: (window: PageWindow) => Promise<T[]>) {
  return resolveCursorConnection(
    { args, defaultSize: DEFAULT_PAGE_SIZE, maxSize: MAX_PAGE_SIZE, toCursor: (row: T) => cursorOf(row) },
    (window: PageWindow): Promise<T[]> => fetch(window),
  ) as Promise<{ edges: Array<{ cursor: string; node: T }>; pageInfo: { hasNextPage: boolean; hasPreviousPage: boolean; startCursor?: string | null; endCursor?: string | null } }>;
}
