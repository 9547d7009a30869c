// Live executions take turns: one subscriber's batch a turn of the event loop (so requests and
// sockets are served between them), tenants in turn. All at once, a tenant's 200 subscribers of
// distinct operations held every other tenant's requests for seconds under its stream of updates.
import { expect, it } from 'vitest';
import { LiveTurns } from '../../src/live/shared-execution.js';

it('runs one task a turn of the event loop, tenants taking turns, each tenant\'s in order', async () => {
  const turns = new LiveTurns();
  // A chain of immediates counting the loop's turns (one a check phase, as LiveTurns' own).
  let turn = 0;
  let counting = true;
  const count = () => {
    turn++;
    if (counting) setImmediate(count);
  };
  setImmediate(count);
  const ran: Array<[string, number]> = [];
  const done = new Promise<void>((resolve) => {
    const task = (name: string) => () => {
      ran.push([name, turn]);
      if (ran.length === 6) resolve();
    };
    for (const name of ['b1', 'b2', 'b3', 'b4']) turns.add('tenant-b', task(name));
    turns.add('tenant-a', task('a1'));
    turns.add('tenant-c', task('c1'));
  });
  await done;
  counting = false;
  expect(ran.map(([name]) => name)).toEqual(['b1', 'a1', 'c1', 'b2', 'b3', 'b4']);
  const at = ran.map(([, t]) => t);
  for (let i = 1; i < at.length; i++) expect(at[i], `task ${i} ran in a turn of its own`).toBeGreaterThan(at[i - 1]!);
});
