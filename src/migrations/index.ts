import { Tenants1764300000001 } from './0001-tenants.js';

/** Every migration, in the order it runs. New ones go at the end. */
export const migrations = [Tenants1764300000001];
