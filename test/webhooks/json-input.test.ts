// JSON input is judged by what JSON.stringify writes (what is stored and sent): its
// nesting, and whether it can be written at all.
import { expect, it } from 'vitest';
import { MAX_JSON_DEPTH, toJsonText } from '../../src/errors.js';

const nested = (depth: number): unknown => {
  let value: unknown = 1;
  for (let i = 1; i < depth; i++) value = i % 2 ? [value] : { v: value };
  return { v: value };
};

it('counts the nesting of objects and arrays, not brackets inside strings', () => {
  expect(toJsonText('data', nested(MAX_JSON_DEPTH))).toContain('"v"');
  expect(() => toJsonText('data', nested(MAX_JSON_DEPTH + 1))).toThrow(/data: nests objects and arrays more than 100 levels deep/);
  const brackets = { text: '['.repeat(500) + '\\"{{{' + '"'.repeat(3), key: { '[[[': '{"' } };
  expect(JSON.parse(toJsonText('data', brackets))).toEqual(brackets);
});

it('refuses what nests too deep for JSON.stringify itself, and what cannot be written', () => {
  expect(() => toJsonText('data', nested(20_000))).toThrow(/more than 100 levels deep/);
  const cyclic: Record<string, unknown> = {};
  cyclic.self = cyclic;
  expect(() => toJsonText('data', cyclic)).toThrow(/data: cannot be written as JSON/);
  expect(() => toJsonText('data', { amount: 10n })).toThrow(/data: cannot be written as JSON/);
  // Nothing written at all (a library caller's object whose toJSON returns nothing): BAD_USER_INPUT, not a TypeError.
  for (const nothing of [undefined, () => 1, Symbol('s'), { toJSON() {} }]) {
    expect(() => toJsonText('data', nothing)).toThrow(expect.objectContaining({ code: 'BAD_USER_INPUT', field: 'data', message: expect.stringMatching(/data: cannot be written as JSON: it writes nothing/) }));
  }
});

it('takes an object by what its toJSON writes (a back-reference left out)', () => {
  const order: Record<string, unknown> = { amount: '10.00', customer: 'Acme' };
  class Line {
    constructor(readonly sku: string, readonly parent: object) {}
    toJSON() {
      return { sku: this.sku };
    }
  }
  order.lines = [new Line('A-1', order), new Line('B-2', order)];
  expect(JSON.parse(toJsonText('data', order))).toEqual({ amount: '10.00', customer: 'Acme', lines: [{ sku: 'A-1' }, { sku: 'B-2' }] });
});
