// The embedded PostgreSQL's data is held by the Hookline process that started it, and
// only while that process runs: a killed one, not yet reaped by its parent (a zombie),
// holds nothing, so a restart right after `kill -9` is not refused.
import { spawn } from 'node:child_process';
import { expect, it } from 'vitest';
import { processAlive } from '../../src/db/embedded.js';

it('tells a running process from a killed one, also before its parent reaps it', async () => {
  // `sleep 30` replaces the shell and never waits for the child it inherits: once that child
  // exits, it stays a zombie until the sleep ends.
  const parent = spawn('sh', ['-c', 'sleep 0.1 & echo $!; exec sleep 30'], { stdio: ['ignore', 'pipe', 'ignore'] });
  try {
    const child = Number.parseInt(await new Promise<string>((resolve) => parent.stdout!.once('data', (d) => resolve(String(d)))), 10);
    expect(processAlive(child)).toBe(true);
    for (const deadline = Date.now() + 5_000; processAlive(child) && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 20));
    expect(processAlive(child)).toBe(false);
    expect(processAlive(parent.pid!)).toBe(true);
    expect(processAlive(process.pid)).toBe(true);
  } finally {
    parent.kill('SIGKILL');
  }
});
