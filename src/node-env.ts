// Imported first by main.ts, before any library reads NODE_ENV: the service runs
// in production mode unless told otherwise. Outside it graphql-js, for one, follows
// every failed type test with a second one (a guard against two copies of the
// library loaded at once), on every request.
process.env.NODE_ENV ??= 'production';
