// schemaProblem's rule that an event type's schema admit some JSON object (an event's data is
// one), judged on the schema alone: what every object fails is refused, anything else taken.
import { describe, expect, it } from 'vitest';
import { createAjv, schemaProblem } from '../../src/webhooks/schema-engine.js';

const problem = (schema: object) => schemaProblem(createAjv(), schema);

describe('a schema no object could pass', () => {
  it.each([
    [{ type: 'string' }, '"type": "string" at its top'],
    [{ allOf: [{}, { enum: [1] }] }, 'an "enum" with no object at #/allOf/1'],
    [{ oneOf: [{ const: 1 }, { type: 'null' }] }, 'no branch of "oneOf" at its top'],
    [{ $ref: '#/definitions/a', definitions: { a: { $ref: '#/definitions/b' }, b: { not: {} } } }, '"not": {} at #/definitions/b'],
  ])('is refused: %j', (schema, why) => {
    expect(problem(schema)).toContain(why);
  });

  it.each([
    // A part with a base of its own resolves its $refs against that base, as ajv does: not judged.
    { definitions: { s: { type: 'string' } }, allOf: [{ $id: 'http://example.com/inner', definitions: { s: { type: 'object' } }, allOf: [{ $ref: '#/definitions/s' }] }] },
    // A recursive one admits while it is judged.
    { definitions: { n: { anyOf: [{ $ref: '#/definitions/n' }, { type: 'object' }] } }, $ref: '#/definitions/n' },
    { if: { type: 'object' }, then: { required: ['a'] } },
  ])('is not refused when some object may pass: %j', (schema) => {
    expect(problem(schema)).toBeUndefined();
  });
});
