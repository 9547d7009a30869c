import { resolveCursorConnection, type DefaultConnectionArguments } from '@pothos/plugin-relay';
import { DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, type PageWindow } from '../db/keyset.js';

/** A Relay connection page of rows keyed by id (see db/keyset.ts). */
export function pageOf<T extends { id: string }>(args: DefaultConnectionArguments, fetch: (window: PageWindow) => Promise<T[]>) {
  return resolveCursorConnection(
    { args, defaultSize: DEFAULT_PAGE_SIZE, maxSize: MAX_PAGE_SIZE, toCursor: (row: T) => row.id },
    (window: PageWindow): Promise<T[]> => fetch(window),
  ) as Promise<{ edges: Array<{ cursor: string; node: T }>; pageInfo: { hasNextPage: boolean; hasPreviousPage: boolean; startCursor?: string | null; endCursor?: string | null } }>;
}
