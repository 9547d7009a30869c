// npm's `prepare`: builds dist/ (what the package exports, and what `npm start` runs)
// with the TypeScript this package depends on, found as Node finds a module (so also
// when a workspace hoists it). An install without the dev dependencies (`npm ci
// --omit=dev`, for a runtime image built from a dist/ made before) has none: it says so
// and succeeds, leaving dist/ as it is; a `tsc` of some other install is never used.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
let tsc;
try {
  // Its package.json is what its exports let out; the compiler is the bin it names.
  const manifest = createRequire(join(root, 'package.json')).resolve('typescript/package.json');
  const { bin } = JSON.parse(readFileSync(manifest, 'utf8'));
  tsc = join(dirname(manifest), typeof bin === 'string' ? bin : bin.tsc);
} catch {
  console.log('hookline: TypeScript is not installed (dev dependencies left out): dist/ is not built');
  process.exit(0);
}
const { status } = spawnSync(process.execPath, [tsc, '-p', 'tsconfig.json'], { cwd: root, stdio: 'inherit' });
process.exit(status ?? 1);
