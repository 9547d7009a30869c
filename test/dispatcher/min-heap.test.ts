import { expect, it } from 'vitest';
import { MinHeap } from '../../src/dispatcher/min-heap.js';

it('gives numbers back smallest first, duplicates and interleaved pushes included', () => {
  const heap = new MinHeap();
  const pushed: number[] = [];
  const popped: number[] = [];
  let seed = 7;
  const random = () => (seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) % 1_000;
  for (let round = 0; round < 50; round++) {
    for (let i = 0; i < 40; i++) {
      const value = random();
      pushed.push(value);
      heap.push(value);
    }
    for (let i = 0; i < 25; i++) popped.push(heap.pop()!);
  }
  while (heap.size) popped.push(heap.pop()!);
  expect(heap.pop()).toBeUndefined();
  expect(popped.slice().sort((a, b) => a - b)).toEqual(pushed.slice().sort((a, b) => a - b));
  // Within each round's pops, and at the end, the order never goes down.
  const tail = popped.slice(50 * 25);
  expect(tail).toEqual(tail.slice().sort((a, b) => a - b));
  expect(popped.slice(0, 25)).toEqual(popped.slice(0, 25).sort((a, b) => a - b));
  // Cleared (a dispatcher that stops), it is empty and takes new times.
  for (const v of [5, 3, 9]) heap.push(v);
  heap.clear();
  expect(heap.size).toBe(0);
  expect(heap.peek()).toBeUndefined();
  heap.push(7);
  expect(heap.pop()).toBe(7);
});
