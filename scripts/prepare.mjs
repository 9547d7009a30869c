// npm's `prepare`: builds dist/ (what the package exports, and what `npm start` runs)
// when TypeScript is installed. An install without the dev dependencies
// (`npm ci --omit=dev`, for a runtime image built from a dist/ made before) has no
// compiler and needs none: it says so and succeeds.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const tsc = join(root, 'node_modules', '.bin', process.platform === 'win32' ? 'tsc.cmd' : 'tsc');
if (!existsSync(tsc)) {
  console.log('hookline: no TypeScript compiler installed (dev dependencies left out): dist/ is not built');
  process.exit(0);
}
const { status } = spawnSync(tsc, ['-p', 'tsconfig.json'], { cwd: root, stdio: 'inherit' });
process.exit(status ?? 1);
