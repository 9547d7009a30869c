// The TypeORM DataSource, for the TypeORM CLI and `npm run migrate`.
// DATABASE_URL must be set here: the embedded database is started by the service itself.
import { createDataSource } from './src/db/data-source.js';

export default createDataSource({ url: process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/hookline' });
