// Builds the JavaScript client (ESM with type declarations, for Node and bundlers) and the
// web app (one bundle for browsers) into dist/. No downloads: TypeScript and esbuild come
// from npm.
import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, rmSync, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const root = dirname(fileURLToPath(import.meta.url));
const dist = join(root, 'dist');
rmSync(dist, { recursive: true, force: true });
mkdirSync(dist, { recursive: true });

// The client: tsc type-checks everything and emits the client's .js and .d.ts.
execFileSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', root], { stdio: 'inherit' });

// The web app, when it exists: one minified bundle plus its static files.
const app = join(root, 'src/app/main.ts');
if (existsSync(app)) {
  await esbuild.build({
    entryPoints: { app: app, sw: join(root, 'src/app/sw.ts') },
    bundle: true,
    minify: true,
    sourcemap: true,
    format: 'esm',
    target: ['es2022'],
    outdir: join(dist, 'web'),
    logLevel: 'warning',
  });
  cpSync(join(root, 'public'), join(dist, 'web'), { recursive: true });
}
console.log(`built ${dist}`);
