// schema.graphql is printed from the code; a change to the code without
// `npm run schema` fails here.
import { readFileSync } from 'node:fs';
import { expect, it } from 'vitest';
import { printedSchema } from '../scripts/print-schema.js';

it('schema.graphql matches the schema built in code (run npm run schema)', () => {
  const committed = readFileSync(new URL('../schema.graphql', import.meta.url), 'utf8');
  expect(committed).toBe(printedSchema());
});
