// The dispatcher's retry timer alone (its loop replaced by a record of wake-ups): it wakes the
// loop at each retry this worker scheduled, also one due a few ms after another, and after
// stop() no more.
import { expect, it } from 'vitest';
import { Dispatcher } from '../../src/dispatcher/dispatcher.js';
import { MinHeap } from '../../src/dispatcher/min-heap.js';

/** A dispatcher with only what its retry timer uses; poke() notes when it is woken (ms after t0). */
function timerOnly() {
  const d = Object.create(Dispatcher.prototype) as Dispatcher & Record<string, any>;
  Object.assign(d, { retryTimes: new MinHeap(), retryAt: Number.POSITIVE_INFINITY, skewMs: 0, retryTimer: undefined, running: true });
  const wakes: number[] = [];
  const t0 = Date.now();
  d.poke = () => void wakes.push(Date.now() - t0);
  return { d, wakes, t0, wakeAt: (at: number) => (d as any).wakeAt(at) as void };
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

it('wakes at each due time, one due 8 ms after another included', async () => {
  const { wakes, t0, wakeAt } = timerOnly();
  const dues = [100, 108, 700];
  for (const at of dues) wakeAt(t0 + at);
  await sleep(1100);
  // One wake may serve both of the first two when the timer fires late on a loaded machine; what
  // counts is that each due time has a wake at or after it, soon after (a retry due 108 ms dropped
  // at the first wake would wait for the one at 700). Never more wakes than due times.
  expect(wakes.length).toBeGreaterThanOrEqual(2);
  expect(wakes.length).toBeLessThanOrEqual(3);
  for (const at of dues) {
    const woke = wakes.find((w) => w >= at);
    expect(woke, `a wake at or after ${at} ms`).toBeDefined();
    expect(woke! - at, `wake for ${at} ms`).toBeLessThan(400);
  }
});

it('wakes no one once stopped', async () => {
  const { d, wakes, t0, wakeAt } = timerOnly();
  wakeAt(t0 + 100);
  (d as any).running = false;
  clearTimeout((d as any).retryTimer); // what stop() does first
  for (const at of [50, 150, 250]) wakeAt(t0 + at); // outcomes recorded after stop()
  await sleep(350);
  expect(wakes).toEqual([]);
});
