// npm's `prepare`: builds dist/ (what the package exports, and what `npm start` runs)
// when TypeScript is installed. npm puts every node_modules/.bin above the package on
// PATH (a workspace hoists TypeScript to its root). An install without the dev
// dependencies (`npm ci --omit=dev`, for a runtime image built from a dist/ made
// before) has no compiler and needs none: it says so and succeeds.
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const { status, error } = spawnSync('tsc', ['-p', 'tsconfig.json'], { cwd: root, stdio: 'inherit', shell: process.platform === 'win32' });
if (error && error.code === 'ENOENT') {
  console.log('hookline: no TypeScript compiler installed (dev dependencies left out): dist/ is not built');
  process.exit(0);
}
if (error) throw error;
process.exit(status ?? 1);
