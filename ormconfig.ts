// The TypeORM DataSource, for the TypeORM CLI: on DATABASE_URL, or else a local PostgreSQL
// (the embedded one is started by the service itself; `npm run migrate` is scripts/migrate.ts).
import { createDataSource } from './src/db/data-source.js';

export default createDataSource({ url: process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/hookline' });
